/**
 * A backup chain (a full and the incrementals on top of it, as stream files)
 * seen as one disk: the merged allocation map and random-access reads from
 * whichever file holds the newest copy of each range. Lets conversion run
 * straight from backups, without restoring first.
 *
 * @module
 */
import { type FileHandle, open } from "node:fs/promises";
import {
  type AllocatedExtent,
  type AllocationKind,
  coalesceMapped,
  extentEnd,
  type MappedExtent,
} from "../core/extent.ts";
import { describeError, InputError, SourceError, UsageError, wrapError } from "../core/errors.ts";
import type { DiskSource } from "../core/source.ts";
import { checkChainOrder } from "./chain.ts";
import { type StreamHeader, zeroRecordHeader } from "./format.ts";
import { type IndexedRecordHeader, openStreamFile } from "./reader.ts";
import { decodeDataPayload } from "./data_record.ts";
import { RECORD_DATA_TARGET } from "./writer.ts";
import { BufferPool, type LentBytes } from "../core/buffer_pool.ts";

/** One stream file's header and its records' headers, in stream order. */
export interface StreamIndex {
  readonly header: StreamHeader;
  readonly records: readonly IndexedRecordHeader[];
}

/** Where one data record's payload sits in which stream file, and its header. */
interface IndexedRecord extends IndexedRecordHeader {
  readonly file: number;
}

/**
 * A range of the merged disk: bytes of a data record starting at `skew`
 * (`rec`), or zeros that a zero record says (`zero`) or that no stream
 * mentions (`hole`).
 */
interface Segment {
  readonly offset: number;
  readonly length: number;
  readonly kind: AllocationKind;
  readonly rec: IndexedRecord | null;
  readonly skew: number;
}

function slice(seg: Segment, from: number, to: number): Segment {
  return { ...seg, offset: from, length: to - from, skew: seg.skew + (from - seg.offset) };
}

/**
 * Decoded records kept by default: enough for the requests of a sequential
 * reader (nbdcopy asks 256 KiB at a time) to find the record they share.
 */
const DEFAULT_CACHE_BYTES = 8 << 20;

/**
 * Compressed payloads being read at once that keep their pooled buffer
 * (more get one of their own): a few, as reads of one record share its load.
 */
const PAYLOAD_BUFFERS = 4;

/**
 * Decoded records lent out beyond the cache's that keep their pooled buffer:
 * records dropped from the cache while a reply still sends a view of them.
 */
const LENT_BUFFERS = 8;

/**
 * Lays `updates` (sorted, non-overlapping) over `base` (sorted, non-overlapping):
 * the newer stream wins wherever both say something. Linear in both lengths.
 */
function overlaySegments(base: Segment[], updates: Segment[]): Segment[] {
  const out: Segment[] = [];
  let i = 0;
  const keepBase = (from: number, to: number) => {
    while (i < base.length && extentEnd(base[i]) <= from) i++;
    for (let j = i; j < base.length && base[j].offset < to; j++) {
      const s = Math.max(base[j].offset, from);
      const e = Math.min(extentEnd(base[j]), to);
      if (e > s) out.push(slice(base[j], s, e));
    }
  };
  let cursor = 0;
  for (const u of updates) {
    keepBase(cursor, u.offset);
    out.push(u);
    cursor = extentEnd(u);
  }
  keepBase(cursor, Infinity);
  return out;
}

/** The disk that a chain of stream files restores to. */
export class ChainSource implements DiskSource {
  readonly size: number;
  /** Headers of the streams, in chain order. */
  readonly headers: readonly StreamHeader[];
  readonly #paths: readonly string[];
  readonly #files: FileHandle[];
  readonly #segments: Segment[];
  readonly #cache: RecordCache;
  /**
   * Buffers of a whole record (as the writer cuts them), reused: a new one
   * per record read is garbage that V8 frees only once some 64 MiB of it
   * piled up, which made most of serve's memory peak. `#payloads`: a
   * compressed payload while it is decoded; `#data`: decoded records, owned
   * by the cache (see RecordCache).
   */
  readonly #payloads = new BufferPool(RECORD_DATA_TARGET, PAYLOAD_BUFFERS);
  readonly #data: BufferPool;

  private constructor(
    indexes: readonly StreamIndex[],
    paths: readonly string[],
    files: FileHandle[],
    cacheBytes: number,
  ) {
    this.headers = indexes.map((i) => i.header);
    this.size = this.headers[0].virtualSize;
    this.#paths = paths;
    this.#files = files;
    this.#segments = mergeChain(indexes);
    this.#data = new BufferPool(
      RECORD_DATA_TARGET,
      Math.ceil(cacheBytes / RECORD_DATA_TARGET) + LENT_BUFFERS,
    );
    this.#cache = new RecordCache(cacheBytes, (data) => this.#data.give(data));
  }

  /**
   * Verifies every stream file completely (checksums, trailer, chain order)
   * and indexes its records. `paths`: the full first, then each incremental.
   */
  static async open(paths: string[]): Promise<ChainSource> {
    if (paths.length === 0) throw new UsageError("a chain needs at least its full backup stream");
    const indexes: StreamIndex[] = [];
    for (const path of paths) {
      const reader = await openStreamFile(path);
      checkChainOrder(indexes.at(-1)?.header ?? null, reader.header);
      const records: IndexedRecordHeader[] = [];
      for await (const rec of reader.records()) {
        records.push(
          rec.kind === "zero" ? indexedZeroHeader(rec.offset, rec.length) : {
            kind: "data",
            offset: rec.offset,
            length: rec.length,
            payloadPosition: rec.payloadPosition,
            storedLength: rec.storedLength,
            compressed: rec.compressed,
            checksum: rec.checksum,
            payloadChecksum: rec.payloadChecksum,
          },
        );
      }
      indexes.push({ header: reader.header, records });
    }
    return await ChainSource.fromIndexes(paths, indexes);
  }

  /**
   * The chain of `paths` from indexes of their records already verified
   * (chain order included); payloads are checked as they are read.
   * `cacheBytes` bounds the decoded records kept.
   */
  static async fromIndexes(
    paths: readonly string[],
    indexes: readonly StreamIndex[],
    cacheBytes = DEFAULT_CACHE_BYTES,
  ): Promise<ChainSource> {
    const files: FileHandle[] = [];
    try {
      for (const path of paths) files.push(await openHandle(path));
    } catch (err) {
      await Promise.all(files.map((f) => f.close()));
      throw err;
    }
    return new ChainSource(indexes, paths, files, cacheBytes);
  }

  /** Merged allocation map: ranges no stream stores as data read as zeros. */
  map(): Promise<MappedExtent[]> {
    return Promise.resolve(coalesceMapped(this.#segments.map((s) => ({
      offset: s.offset,
      length: s.length,
      kind: s.kind === "data" ? "data" as const : "zero" as const,
    }))));
  }

  /**
   * What `[offset, offset + length)` holds as the streams record it: data,
   * zero records, or holes no stream mentions; neighbours of a kind merged.
   */
  allocation(offset: number, length: number): AllocatedExtent[] {
    this.#checkRange(offset, length);
    const out: AllocatedExtent[] = [];
    const end = offset + length;
    for (let i = this.#find(offset); i < this.#segments.length; i++) {
      const seg = this.#segments[i];
      if (seg.offset >= end) break;
      const from = Math.max(seg.offset, offset);
      const to = Math.min(extentEnd(seg), end);
      const last = out.at(-1);
      if (last?.kind === seg.kind) out[out.length - 1] = { ...last, length: to - last.offset };
      else out.push({ offset: from, length: to - from, kind: seg.kind });
    }
    return out;
  }

  /** Reads `[offset, offset + length)` from the streams that hold it, into a new buffer. */
  async read(offset: number, length: number): Promise<Uint8Array> {
    this.#checkRange(offset, length);
    const out = new Uint8Array(length);
    const end = offset + length;
    const parts: Promise<void>[] = [];
    for (let i = this.#find(offset); i < this.#segments.length; i++) {
      const seg = this.#segments[i];
      if (seg.offset >= end) break;
      const rec = seg.rec;
      if (!rec) continue;
      const from = Math.max(seg.offset, offset);
      const to = Math.min(extentEnd(seg), end);
      const at = seg.skew + (from - seg.offset);
      const entry = this.#cache.pin(rec, () => this.#load(rec));
      parts.push(
        entry.data.then((data) => {
          out.set(data.subarray(at, at + (to - from)), from - offset);
        }).finally(() => this.#cache.unpin(entry)),
      );
    }
    await Promise.all(parts);
    return out;
  }

  /**
   * Like {@link read}, but a range within one record comes back as a view of
   * the cached record, not a copy: the caller must not change it, and must
   * `release` it once done (then it must not touch it any more: the record's
   * buffer goes back to the pool once the cache drops it).
   */
  async lend(offset: number, length: number): Promise<LentBytes> {
    this.#checkRange(offset, length);
    const seg = this.#segments[this.#find(offset)];
    const rec = seg.rec;
    if (!rec || offset + length > extentEnd(seg)) {
      return { bytes: await this.read(offset, length), release: () => {} };
    }
    const entry = this.#cache.pin(rec, () => this.#load(rec));
    let data: Uint8Array;
    try {
      data = await entry.data;
    } catch (err) {
      this.#cache.unpin(entry);
      throw err;
    }
    const at = seg.skew + (offset - seg.offset);
    let released = false;
    return {
      bytes: data.subarray(at, at + length),
      release: () => {
        if (released) return;
        released = true;
        this.#cache.unpin(entry);
      },
    };
  }

  async close(): Promise<void> {
    this.#cache.clear();
    const files = this.#files.splice(0);
    await Promise.all(files.map((f) => f.close().catch(() => {})));
  }

  #checkRange(offset: number, length: number): void {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new RangeError(`read ${offset}+${length} is outside the disk (size ${this.size})`);
    }
  }

  /** Index of the segment containing `offset` (segments cover the whole disk). */
  #find(offset: number): number {
    let lo = 0;
    let hi = this.#segments.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.#segments[mid].offset <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  async #load(rec: IndexedRecord): Promise<Uint8Array> {
    const path = this.#paths[rec.file];
    const handle = this.#files[rec.file];
    if (!handle) throw new SourceError(`backup chain is closed; cannot read '${path}'`);
    // An uncompressed payload is the data: read straight into the data's buffer.
    const data = this.#data.take(rec.compressed ? rec.length : rec.storedLength);
    const payload = rec.compressed ? this.#payloads.take(rec.storedLength) : data;
    try {
      return await this.#decode(rec, handle, payload, data);
    } catch (err) {
      this.#data.give(data);
      throw err;
    } finally {
      if (payload !== data) this.#payloads.give(payload);
    }
  }

  /** Reads `rec`'s payload from `handle` into `payload` and decodes it into `data`. */
  async #decode(
    rec: IndexedRecord,
    handle: FileHandle,
    payload: Uint8Array,
    data: Uint8Array,
  ): Promise<Uint8Array> {
    const path = this.#paths[rec.file];
    let got = 0;
    try {
      while (got < payload.length) {
        const { bytesRead } = await handle.read(
          payload,
          got,
          payload.length - got,
          rec.payloadPosition + got,
        );
        if (bytesRead === 0) break;
        got += bytesRead;
      }
    } catch (err) {
      throw wrapError(
        err,
        SourceError,
        `cannot read backup stream '${path}': ${describeError(err)}`,
      );
    }
    const where = `${path}: record at ${rec.offset}`;
    if (got < payload.length) {
      throw new InputError(`${where}: the file was truncated after indexing`);
    }
    // A mismatch here means the file changed (or rotted) after indexing.
    return decodeDataPayload(this.headers[rec.file], rec, payload, where, data);
  }
}

/** A zero record's header, as an index holds it (it has no payload). */
function indexedZeroHeader(offset: number, length: number): IndexedRecordHeader {
  return { ...zeroRecordHeader(offset, length), payloadPosition: 0 };
}

/** The disk's segments: each stream's records laid over the ones before, from a hole. */
function mergeChain(indexes: readonly StreamIndex[]): Segment[] {
  const size = indexes[0].header.virtualSize;
  let segments: Segment[] = [{ offset: 0, length: size, kind: "hole", rec: null, skew: 0 }];
  for (const [file, index] of indexes.entries()) {
    segments = overlaySegments(
      segments,
      index.records.map((r) => ({
        offset: r.offset,
        length: r.length,
        kind: r.kind,
        rec: r.kind === "data" ? { ...r, file } : null,
        skew: 0,
      })),
    );
  }
  return segments;
}

/** A record in the cache, or being loaded into it, and who is using it. */
interface CacheEntry {
  readonly rec: IndexedRecord;
  readonly data: Promise<Uint8Array>;
  /** Reads using `data` now: its buffer is not given back while there are any. */
  pins: number;
  /** Still in the cache (a dropped entry's buffer goes back once unpinned). */
  cached: boolean;
}

/**
 * Decoded records, least recently used dropped first once they hold more
 * than `limit` bytes; a record being loaded is shared by every read that
 * wants it, and a failed load is not kept (the next read tries again).
 *
 * The cache owns each record's buffer: a read {@link pin}s the entry, uses
 * the data, then {@link unpin}s it, and the buffer goes to `giveBack` once
 * the entry is both dropped and unpinned, exactly once.
 */
class RecordCache {
  readonly #entries = new Map<IndexedRecord, CacheEntry>();
  #bytes = 0;

  constructor(readonly limit: number, readonly giveBack: (data: Uint8Array) => void) {}

  /** The entry of `rec` (loaded by `load` if it is not cached), pinned. */
  pin(rec: IndexedRecord, load: () => Promise<Uint8Array>): CacheEntry {
    const hit = this.#entries.get(rec);
    if (hit) {
      this.#entries.delete(rec);
      this.#entries.set(rec, hit);
      hit.pins++;
      return hit;
    }
    const entry: CacheEntry = { rec, data: load(), pins: 1, cached: true };
    this.#entries.set(rec, entry);
    this.#bytes += rec.length;
    entry.data.catch(() => {
      if (this.#entries.get(rec) === entry) this.#drop(entry);
    });
    for (const old of this.#entries.values()) {
      if (this.#bytes <= this.limit || old === entry) break;
      this.#drop(old);
    }
    return entry;
  }

  /** Ends a use of `entry` begun by {@link pin}. */
  unpin(entry: CacheEntry): void {
    entry.pins--;
    this.#giveBackIfUnused(entry);
  }

  clear(): void {
    for (const entry of [...this.#entries.values()]) this.#drop(entry);
  }

  #drop(entry: CacheEntry): void {
    this.#entries.delete(entry.rec);
    this.#bytes -= entry.rec.length;
    entry.cached = false;
    this.#giveBackIfUnused(entry);
  }

  #giveBackIfUnused(entry: CacheEntry): void {
    // A failed load has no buffer to give (#load gave it back itself).
    if (!entry.cached && entry.pins === 0) entry.data.then(this.giveBack, () => {});
  }
}

async function openHandle(path: string): Promise<FileHandle> {
  try {
    return await open(path, "r");
  } catch (err) {
    throw wrapError(err, SourceError, `cannot open backup stream '${path}': ${describeError(err)}`);
  }
}
