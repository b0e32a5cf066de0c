/**
 * Change detection layers 2 and 3 over what layer 1 (the dirty bitmap, or
 * the allocation map for a full) said to read: every block read is hashed
 * (xxHash64) and its hash staged in the hash DB; a block whose hash equals the
 * parent backup's is unchanged (L2, not stored), an all-zero block becomes a
 * zero extent (L3), anything else is data.
 *
 * @module
 */
import { xxh64 } from "@node-rs/xxhash";
import { alignExtents, type Extent, extentEnd, type MappedExtent } from "../core/extent.ts";
import type { HashDb } from "./hashdb.ts";

/** Bytes per layer: dirty = unchanged + zero + data. */
export interface CbtStats {
  /** Bytes read because L1 marked them (all allocated bytes for a full). */
  dirtyBytes: number;
  /** Dropped by L2: content equal to the parent backup's. */
  unchangedBytes: number;
  /** Dropped by L3: all zeros, recorded as zero extents. */
  zeroBytes: number;
  /** Left to store. */
  dataBytes: number;
}

/**
 * A classified run: zeros, or data with its bytes (a view of the chunk given)
 * and the xxHash64 of each of its blocks (the stream writer's record checksums
 * are made from them).
 */
export type ClassifiedExtent =
  | (MappedExtent & { readonly kind: "zero" })
  | (MappedExtent & {
    readonly kind: "data";
    readonly data: Uint8Array;
    readonly blockHashes: BigUint64Array;
  });

/** True when every byte is zero; 8 bytes per step when the view is aligned. */
export function isAllZero(bytes: Uint8Array): boolean {
  const head = (8 - (bytes.byteOffset % 8)) % 8;
  if (bytes.length < 64 || head > 0) {
    for (let i = 0; i < bytes.length; i++) if (bytes[i] !== 0) return false;
    return true;
  }
  const words = new BigUint64Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 3);
  for (let i = 0; i < words.length; i++) if (words[i] !== 0n) return false;
  for (let i = words.length * 8; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}

/**
 * What a full backup reads and what it only stages as zero blocks: the data
 * extents of an allocation map widened to whole blocks, and the rest.
 */
export function fullBackupPlan(
  map: readonly MappedExtent[],
  blockSize: number,
  diskSize: number,
): { read: Extent[]; unread: Extent[] } {
  const read = alignExtents(map.filter((e) => e.kind === "data"), blockSize, diskSize);
  const unread: Extent[] = [];
  let cursor = 0;
  for (const e of read) {
    if (e.offset > cursor) unread.push({ offset: cursor, length: e.offset - cursor });
    cursor = extentEnd(e);
  }
  if (cursor < diskSize) unread.push({ offset: cursor, length: diskSize - cursor });
  return { read, unread };
}

/** Classifies the blocks of one backup and stages their hashes in a hash DB. */
export class BlockClassifier {
  /** Per-layer totals so far. */
  readonly stats: CbtStats = { dirtyBytes: 0, unchangedBytes: 0, zeroBytes: 0, dataBytes: 0 };
  readonly #db: HashDb;
  readonly #compare: boolean;
  readonly #zeroHash: bigint;
  readonly #tailLength: number;
  readonly #tailZeroHash: bigint;

  /**
   * `compareWithParent` turns L2 on: only when the DB's committed id is the
   * parent backup's id (never for a full). Hashes are staged either way.
   */
  constructor(db: HashDb, opts: { compareWithParent: boolean }) {
    this.#db = db;
    this.#compare = opts.compareWithParent;
    this.#zeroHash = xxh64(new Uint8Array(db.blockSize));
    this.#tailLength = db.diskSize % db.blockSize || db.blockSize;
    this.#tailZeroHash = xxh64(new Uint8Array(this.#tailLength));
  }

  /**
   * Classifies `chunk`, the content of `[offset, offset + chunk.length)`,
   * which must start on a block boundary and end on one or at the disk's end.
   * Returns merged zero and data runs in order; unchanged blocks are omitted.
   * Data runs are views of `chunk`: use them before reusing it.
   */
  classify(offset: number, chunk: Uint8Array): ClassifiedExtent[] {
    const { blockSize, diskSize } = this.#db;
    const end = offset + chunk.length;
    if (offset % blockSize !== 0 || (end % blockSize !== 0 && end !== diskSize) || end > diskSize) {
      throw new RangeError(
        `chunk ${offset}+${chunk.length} is not aligned to ${blockSize}-byte blocks of a ${diskSize}-byte disk`,
      );
    }
    const out: ClassifiedExtent[] = [];
    const hashes = new BigUint64Array(Math.ceil(chunk.length / blockSize));
    let runKind: "zero" | "data" | null = null;
    let runStart = 0;
    const closeRun = (at: number) => {
      if (runKind === "data") {
        out.push({
          offset: offset + runStart,
          length: at - runStart,
          kind: "data",
          data: chunk.subarray(runStart, at),
          blockHashes: hashes.subarray(runStart / blockSize, Math.ceil(at / blockSize)),
        });
      } else if (runKind === "zero") {
        out.push({ offset: offset + runStart, length: at - runStart, kind: "zero" });
      }
      runKind = null;
    };
    let index = offset / blockSize;
    for (let at = 0; at < chunk.length; at += blockSize, index++) {
      const block = chunk.subarray(at, Math.min(at + blockSize, chunk.length));
      const hash = xxh64(block);
      hashes[at / blockSize] = hash;
      this.#db.stage(index, hash);
      this.stats.dirtyBytes += block.length;
      let kind: "unchanged" | "zero" | "data";
      if (this.#compare && this.#db.get(index) === hash) kind = "unchanged";
      else if (hash === this.#zeroHashOf(block.length) && isAllZero(block)) kind = "zero";
      else kind = "data";
      if (kind === "unchanged") this.stats.unchangedBytes += block.length;
      else if (kind === "zero") this.stats.zeroBytes += block.length;
      else this.stats.dataBytes += block.length;
      if (kind !== runKind) {
        closeRun(at);
        if (kind !== "unchanged") {
          runKind = kind;
          runStart = at;
        }
      }
    }
    closeRun(chunk.length);
    return out;
  }

  /**
   * Stages the zero-block hash for a block-aligned range that a full backup
   * does not read (unallocated). Not counted as dirty.
   */
  stageUnread(extent: Extent): void {
    const { blockSize, diskSize } = this.#db;
    const end = extentEnd(extent);
    if (extent.offset % blockSize !== 0 || (end % blockSize !== 0 && end !== diskSize)) {
      throw new RangeError(`unread range ${extent.offset}+${extent.length} is not block-aligned`);
    }
    if (extent.length <= 0) return;
    const first = extent.offset / blockSize;
    const last = Math.ceil(end / blockSize); // exclusive
    const fullEnd = end === diskSize && this.#tailLength !== blockSize ? last - 1 : last;
    this.#db.stageRange(first, fullEnd - first, this.#zeroHash);
    if (fullEnd < last) this.#db.stage(fullEnd, this.#tailZeroHash);
  }

  #zeroHashOf(length: number): bigint {
    return length === this.#db.blockSize ? this.#zeroHash : this.#tailZeroHash;
  }
}
