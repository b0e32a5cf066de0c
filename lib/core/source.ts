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
