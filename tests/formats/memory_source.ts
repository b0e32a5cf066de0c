/**
 * A small sparse in-memory {@link DiskSource} for writer tests, plus a helper
 * that stores the same content as a sparse raw file for qemu-img to compare
 * against.
 *
 * @module
 */
import type { MappedExtent } from "../../lib/core/extent.ts";
import type { DiskSource } from "../../lib/core/source.ts";
import { writeAll } from "../../lib/core/bytes.ts";

/** A chunk of disk content at an offset. */
export interface Chunk {
  readonly offset: number;
  readonly bytes: Uint8Array;
}

/** Deterministic, poorly compressible-but-not-random bytes (different per seed). */
export function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = (i & 64) ? x & 0xff : (i >> 3) & 0x0f;
  }
  return out;
}

/**
 * A disk of `size` bytes whose content is `chunks` (sorted, disjoint) and
 * zeros elsewhere. `zeroMapped` chunks are reported as data but contain zeros
 * (tests "allocated but all zero").
 */
export class MemorySource implements DiskSource {
  readonly size: number;
  readonly chunks: readonly Chunk[];
  reads = 0;

  constructor(size: number, chunks: Chunk[]) {
    this.size = size;
    this.chunks = [...chunks].sort((a, b) => a.offset - b.offset);
  }

  map(): Promise<MappedExtent[]> {
    const out: MappedExtent[] = [];
    let at = 0;
    for (const c of this.chunks) {
      if (c.offset > at) out.push({ offset: at, length: c.offset - at, kind: "zero" });
      out.push({ offset: c.offset, length: c.bytes.length, kind: "data" });
      at = c.offset + c.bytes.length;
    }
    if (at < this.size) out.push({ offset: at, length: this.size - at, kind: "zero" });
    return Promise.resolve(out);
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    if (offset < 0 || offset + length > this.size) {
      return Promise.reject(new RangeError(`read ${offset}+${length} beyond ${this.size}`));
    }
    this.reads++;
    const out = new Uint8Array(length);
    for (const c of this.chunks) {
      const s = Math.max(offset, c.offset),
        e = Math.min(offset + length, c.offset + c.bytes.length);
      if (e > s) out.set(c.bytes.subarray(s - c.offset, e - c.offset), s - offset);
    }
    return Promise.resolve(out);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  /** Writes the content as a sparse raw file of exactly `size` bytes. */
  async saveRaw(path: string): Promise<void> {
    using f = await Deno.open(path, { write: true, create: true, truncate: true });
    await f.truncate(this.size);
    for (const c of this.chunks) {
      await f.seek(c.offset, Deno.SeekMode.Start);
      await writeAll(f, c.bytes);
    }
  }
}
