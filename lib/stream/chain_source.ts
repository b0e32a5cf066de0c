/**
 * A backup chain (a full and the incrementals on top of it, as stream files)
 * seen as one disk: the merged allocation map and random-access reads from
 * whichever file holds the newest copy of each range. Lets conversion run
 * straight from backups, without restoring first.
 *
 * @module
 */
import { type FileHandle, open } from "node:fs/promises";
import { coalesceMapped, extentEnd, type MappedExtent } from "../core/extent.ts";
import { describeError, InputError, SourceError, UsageError } from "../core/errors.ts";
import type { DiskSource } from "../core/source.ts";
import { checkChainOrder } from "./chain.ts";
import type { RecordHeader, StreamHeader } from "./format.ts";
import { openStreamFile } from "./reader.ts";
import { decodeDataPayload } from "./data_record.ts";

/** Where one data record's payload sits in a stream file, and its header. */
interface IndexedRecord extends RecordHeader {
  readonly file: number;
  readonly payloadPosition: number;
}

/** A range of the merged disk: zeros (`rec` null) or bytes of a record starting at `skew`. */
interface Segment {
  readonly offset: number;
  readonly length: number;
  readonly rec: IndexedRecord | null;
  readonly skew: number;
}

function slice(seg: Segment, from: number, to: number): Segment {
  return { offset: from, length: to - from, rec: seg.rec, skew: seg.skew + (from - seg.offset) };
}

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
  #cached: { rec: IndexedRecord; data: Uint8Array } | null = null;

  private constructor(
    headers: StreamHeader[],
    paths: string[],
    files: FileHandle[],
    segments: Segment[],
  ) {
    this.headers = headers;
    this.size = headers[0].virtualSize;
    this.#paths = paths;
    this.#files = files;
    this.#segments = segments;
  }

  /**
   * Verifies every stream file completely (checksums, trailer, chain order)
   * and indexes its records. `paths`: the full first, then each incremental.
   */
  static async open(paths: string[]): Promise<ChainSource> {
    if (paths.length === 0) throw new UsageError("a chain needs at least its full backup stream");
    const headers: StreamHeader[] = [];
    const files: FileHandle[] = [];
    let segments: Segment[] = [];
    try {
      for (const [file, path] of paths.entries()) {
        const reader = await openStreamFile(path);
        checkChainOrder(headers.at(-1) ?? null, reader.header);
        const updates: Segment[] = [];
        for await (const rec of reader.records()) {
          const indexed: IndexedRecord | null = rec.kind === "zero" ? null : {
            kind: "data",
            file,
            offset: rec.offset,
            length: rec.length,
            payloadPosition: rec.payloadPosition,
            storedLength: rec.storedLength,
            compressed: rec.compressed,
            checksum: rec.checksum,
            payloadChecksum: rec.payloadChecksum,
          };
          updates.push({ offset: rec.offset, length: rec.length, rec: indexed, skew: 0 });
        }
        if (file === 0) {
          segments = [{ offset: 0, length: reader.header.virtualSize, rec: null, skew: 0 }];
        }
        segments = overlaySegments(segments, updates);
        headers.push(reader.header);
        files.push(await openHandle(path));
      }
    } catch (err) {
      await Promise.all(files.map((f) => f.close()));
      throw err;
    }
    return new ChainSource(headers, paths, files, segments);
  }

  /** Merged allocation map: ranges no stream stores as data read as zeros. */
  map(): Promise<MappedExtent[]> {
    return Promise.resolve(coalesceMapped(this.#segments.map((s) => ({
      offset: s.offset,
      length: s.length,
      kind: s.rec ? "data" as const : "zero" as const,
    }))));
  }

  /** Reads `[offset, offset + length)` from the streams that hold it. */
  async read(offset: number, length: number): Promise<Uint8Array> {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new RangeError(`read ${offset}+${length} is outside the disk (size ${this.size})`);
    }
    const out = new Uint8Array(length);
    const end = offset + length;
    for (let i = this.#find(offset); i < this.#segments.length; i++) {
      const seg = this.#segments[i];
      if (seg.offset >= end) break;
      if (!seg.rec) continue;
      const from = Math.max(seg.offset, offset);
      const to = Math.min(extentEnd(seg), end);
      const data = await this.#load(seg.rec);
      const at = seg.skew + (from - seg.offset);
      out.set(data.subarray(at, at + (to - from)), from - offset);
    }
    return out;
  }

  async close(): Promise<void> {
    this.#cached = null;
    const files = this.#files.splice(0);
    await Promise.all(files.map((f) => f.close().catch(() => {})));
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
    if (this.#cached?.rec === rec) return this.#cached.data;
    const path = this.#paths[rec.file];
    const handle = this.#files[rec.file];
    if (!handle) throw new SourceError(`backup chain is closed; cannot read '${path}'`);
    const payload = new Uint8Array(rec.storedLength);
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
      throw new SourceError(`cannot read backup stream '${path}': ${describeError(err)}`);
    }
    const where = `${path}: record at ${rec.offset}`;
    if (got < payload.length) {
      throw new InputError(`${where}: the file was truncated after indexing`);
    }
    // A mismatch here means the file changed after indexing.
    const data = decodeDataPayload(this.headers[rec.file], rec, payload, where);
    this.#cached = { rec, data };
    return data;
  }
}

async function openHandle(path: string): Promise<FileHandle> {
  try {
    return await open(path, "r");
  } catch (err) {
    throw new SourceError(`cannot open backup stream '${path}': ${describeError(err)}`);
  }
}
