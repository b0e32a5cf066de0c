/**
 * Reads ranges of a {@link DiskSource} the way image writers need them: only
 * the `data` extents of the map are read, zero extents and anything past the
 * virtual size come back as zeros, and several reads run ahead of the writer
 * so the source and the sink are busy at the same time.
 *
 * @module
 */
import { blockRunRanges, type MappedExtent } from "../core/extent.ts";
import type { DiskSource } from "../core/source.ts";
import type { RunSet } from "./run_set.ts";

/** Largest single read sent to the source: QEMU's NBD server is fastest at 1 MiB (lib/nbd/reader.ts). */
export const MAX_READ = 1 << 20;

/** A contiguous range of the virtual disk, read and ready to append. */
export interface Piece {
  readonly offset: number;
  readonly bytes: Uint8Array;
}

/** Reads ranges through the allocation map. */
export class MappedReader {
  readonly #source: DiskSource;
  readonly #data: MappedExtent[];

  constructor(source: DiskSource, map: readonly MappedExtent[]) {
    this.#source = source;
    this.#data = map.filter((e) => e.kind === "data" && e.length > 0);
  }

  /** Bytes `[offset, offset+length)`; unmapped parts and the tail past `size` are zeros. */
  async read(offset: number, length: number): Promise<Uint8Array> {
    const end = offset + length;
    const parts: { at: number; offset: number; length: number }[] = [];
    for (let k = this.#firstEndingAfter(offset); k < this.#data.length; k++) {
      const e = this.#data[k];
      if (e.offset >= end) break;
      const s = Math.max(offset, e.offset);
      const t = Math.min(end, e.offset + e.length, this.#source.size);
      if (t > s) parts.push({ at: s - offset, offset: s, length: t - s });
    }
    if (parts.length === 1 && parts[0].at === 0 && parts[0].length === length) {
      return await this.#source.read(offset, length);
    }
    const out = new Uint8Array(length);
    const chunks = await Promise.all(parts.map((p) => this.#source.read(p.offset, p.length)));
    parts.forEach((p, i) => out.set(chunks[i], p.at));
    return out;
  }

  #firstEndingAfter(offset: number): number {
    let lo = 0, hi = this.#data.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const e = this.#data[mid];
      if (e.offset + e.length <= offset) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/**
 * The bytes of every member block of `blocks` (blocks of `blockSize` bytes), in
 * ascending order, as pieces of at most {@link MAX_READ} bytes (or one block if
 * larger pieces are needed to keep block boundaries), with `readAhead` reads in flight.
 */
export async function* readBlocks(
  reader: MappedReader,
  blocks: RunSet,
  blockSize: number,
  readAhead = 4,
): AsyncGenerator<Piece> {
  yield* readAheadOf(blockRunRanges(blocks.runs, blockSize, MAX_READ), reader, readAhead);
}

/** Reads the given ranges in order with `readAhead` reads in flight. */
export async function* readAheadOf(
  ranges: Iterable<{ offset: number; length: number }>,
  reader: MappedReader,
  readAhead = 4,
): AsyncGenerator<Piece> {
  const pending: Promise<Piece>[] = [];
  for (const range of ranges) {
    const p = reader.read(range.offset, range.length).then((bytes) => ({
      offset: range.offset,
      bytes,
    }));
    // Marked handled now: a failure surfaces when its turn comes to be awaited.
    p.catch(() => {});
    pending.push(p);
    if (pending.length >= readAhead) yield await pending.shift()!;
  }
  while (pending.length) yield await pending.shift()!;
}
