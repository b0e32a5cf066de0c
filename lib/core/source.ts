/**
 * The interface every disk source offers to sinks (stream writer, image
 * writers, replication): an allocation map known before the data, then reads.
 * NBD exports, backup chains and local images all implement it.
 *
 * @module
 */
import type { MappedExtent } from "./extent.ts";

/** A readable virtual disk whose allocation map is known up front. */
export interface DiskSource {
  /** Virtual size in bytes (need not be a multiple of any block size). */
  readonly size: number;
  /**
   * Sorted, non-overlapping extents covering `[0, size)`: `data` ranges must be
   * read, `zero` ranges read as zeros and are never read.
   */
  map(): Promise<MappedExtent[]>;
  /** Reads exactly `length` bytes at `offset` (at most a few MiB per call). */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Releases connections and helper processes. Safe to call twice. */
  close(): Promise<void>;
}

/**
 * `src` reporting its reads: after each, `onRead(bytes read so far, data
 * bytes of its map)` (the total is 0 until the map was asked for).
 */
export function withReadProgress(
  src: DiskSource,
  onRead: (done: number, total: number) => void,
): DiskSource {
  let done = 0;
  let total = 0;
  return {
    size: src.size,
    async map() {
      const extents = await src.map();
      total = extents.reduce((n, e) => e.kind === "data" ? n + e.length : n, 0);
      return extents;
    },
    async read(offset, length) {
      const bytes = await src.read(offset, length);
      done += length;
      onRead(done, total);
      return bytes;
    },
    close: () => src.close(),
  };
}
