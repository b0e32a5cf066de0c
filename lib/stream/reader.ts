/**
 * Reads and verifies a dirtybit backup stream strictly sequentially from any
 * byte source (file, pipe, stdin). Every defect — bad magic, unknown version,
 * corrupt byte, truncation, trailing garbage — is an InputError.
 *
 * @module
 */
import { Xxh64 } from "@node-rs/xxhash";
import { describeError, InputError, SourceError, wrapError } from "../core/errors.ts";
import { ByteReader } from "./byte_reader.ts";
import {
  checkPayload,
  decodeHeader,
  decodeHeaderPrefix,
  decodeRecordHeader,
  decodeTrailer,
  frameKind,
  HEADER_PREFIX_SIZE,
  type RecordHeader,
  recordHeaderSize,
  streamHashCoversPayloads,
  type StreamHeader,
  type StreamTrailer,
  TRAILER_SIZE,
} from "./format.ts";
import { decodeDataPayload } from "./data_record.ts";

/** A data record: `data` is the uncompressed content of `[offset, offset + length)`. */
export interface DataRecord {
  readonly kind: "data";
  readonly offset: number;
  readonly length: number;
  /** A fresh buffer the caller may keep (unless {@link RecordsOptions.borrowed}). */
  readonly data: Uint8Array;
  /** Stream position of the payload (for random access to stream files). */
  readonly payloadPosition: number;
  readonly storedLength: number;
  readonly compressed: boolean;
  /** The record's data checksum (`dataChecksum` of `data`). */
  readonly checksum: bigint;
  /** The stored payload's checksum (version 3; 0 before). */
  readonly payloadChecksum: bigint;
  /** The payload as stored (the zstd frame, or the data); for copying the record as it is. */
  readonly stored: Uint8Array;
}

/** A zero record: `[offset, offset + length)` reads as zeros. */
export interface ZeroRecord {
  readonly kind: "zero";
  readonly offset: number;
  readonly length: number;
}

/** A record header and where its payload starts in the stream. */
export interface IndexedRecordHeader extends RecordHeader {
  readonly payloadPosition: number;
}

/** One record of a stream, in stream (= ascending offset) order. */
export type StreamRecord = DataRecord | ZeroRecord;

/** How {@link StreamReader.records} hands out data records. */
export interface RecordsOptions {
  /**
   * Decompress a record's data only when its `data` is read. A compressed
   * record of a version 3 stream is then checked by its stored payload's
   * checksum as it is read, and by its data checksum only once decompressed:
   * for copying records as stored (merge) without the cost of zstd. Older
   * versions have no payload checksum and are always decompressed.
   */
  readonly lazy?: boolean;
  /**
   * Hand out a record's `stored` (and `data`, when that is `stored`) in the
   * reader's own buffer, reused for the next record: they are valid only
   * until the next record is asked for, and a caller that keeps them longer
   * must copy. Spares a new buffer per record (what a merge's memory peak
   * was made of); a stream source's payload is then a view of its chunk.
   */
  readonly borrowed?: boolean;
}

/** A verified, sequential view of one stream. */
export class StreamReader {
  readonly header: StreamHeader;
  readonly #in: ByteReader;
  readonly #hash: Xxh64;
  readonly #name: string;
  #trailer: StreamTrailer | null = null;
  #started = false;

  private constructor(input: ByteReader, header: StreamHeader, hash: Xxh64, name: string) {
    this.#in = input;
    this.header = header;
    this.#hash = hash;
    this.#name = name;
  }

  /**
   * Reads and verifies the header of the stream `src`. `name` (a file name,
   * "stdin") goes into error messages.
   */
  static async open(
    src: ReadableStream<Uint8Array> | Deno.FsFile,
    name = "backup stream",
  ): Promise<StreamReader> {
    const input = new ByteReader(src);
    try {
      const hash = new Xxh64();
      const prefix = await readOrFail(input, HEADER_PREFIX_SIZE, name, "the header");
      const jsonLength = decodeHeaderPrefix(prefix);
      const rest = await readOrFail(input, jsonLength + 8, name, "the header");
      const whole = new Uint8Array(HEADER_PREFIX_SIZE + rest.length);
      whole.set(prefix, 0);
      whole.set(rest, HEADER_PREFIX_SIZE);
      const header = decodeHeader(whole);
      hash.update(whole);
      return new StreamReader(input, header, hash, name);
    } catch (err) {
      await input.cancel();
      throw named(err, name);
    }
  }

  /** The verified trailer; available once `records()` has run to its end. */
  get trailer(): StreamTrailer {
    if (!this.#trailer) throw new RangeError("the trailer is known only after all records");
    return this.#trailer;
  }

  /** Stops reading (when the records are not wanted) and releases the source. */
  async close(): Promise<void> {
    this.#started = true;
    await this.#in.cancel();
  }

  /** Stream bytes consumed so far. */
  get position(): number {
    return this.#in.position;
  }

  /**
   * Yields every record after verifying it (see {@link RecordsOptions.lazy}),
   * then verifies the trailer and that nothing follows. Can be iterated once. Stopping early releases the source.
   */
  async *records(options: RecordsOptions = {}): AsyncGenerator<StreamRecord> {
    const walk = this.#walk(true, options.borrowed ?? false);
    for await (const { rec, payloadPosition, payload } of walk) {
      if (rec.kind === "zero") {
        yield { kind: "zero", offset: rec.offset, length: rec.length };
        continue;
      }
      const where = `${this.#name}: record at ${rec.offset}`;
      const fields = {
        kind: "data",
        offset: rec.offset,
        length: rec.length,
        payloadPosition,
        storedLength: rec.storedLength,
        compressed: rec.compressed,
        checksum: rec.checksum,
        payloadChecksum: rec.payloadChecksum,
      } as const;
      const stored = payload!;
      if (options.lazy && rec.compressed && this.header.version >= 3) {
        checkPayload(this.header.version, rec, stored, where);
        const header = this.header;
        let data: Uint8Array | undefined;
        yield {
          ...fields,
          stored,
          get data() {
            return data ??= decodeDataPayload(header, rec, stored, where);
          },
        };
        continue;
      }
      const decoded = decodeDataPayload(this.header, rec, stored, where);
      const data = decoded === stored && !options.borrowed ? stored.slice() : decoded;
      yield { ...fields, data, stored: rec.compressed ? stored : data };
    }
  }

  /**
   * Like {@link records}, but yields only the verified record headers and
   * where their payloads sit, passing over the payloads (a file source seeks
   * past them): everything but the payloads is checked, trailer included,
   * as the stream checksum leaves payloads out (a version 1 stream's covers
   * them, so its payloads are read and hashed, not decoded).
   */
  async *recordHeaders(): AsyncGenerator<IndexedRecordHeader> {
    const withPayloads = streamHashCoversPayloads(this.header.version);
    for await (const { rec, payloadPosition } of this.#walk(withPayloads, true)) {
      yield { ...rec, payloadPosition };
    }
  }

  /** `borrowed`: payloads in one buffer reused from record to record (see {@link RecordsOptions}). */
  async *#walk(
    withPayloads: boolean,
    borrowed: boolean,
  ): AsyncGenerator<{ rec: RecordHeader; payloadPosition: number; payload?: Uint8Array }> {
    if (this.#started) throw new RangeError("stream records can be read only once");
    this.#started = true;
    const counted = { records: 0, dataBytes: 0, zeroBytes: 0, storedBytes: 0 };
    const size = this.header.virtualSize;
    const headerSize = recordHeaderSize(this.header.version);
    let end = 0;
    let scratch = new Uint8Array(0);
    try {
      for (;;) {
        const at = this.#in.position;
        const first = await this.#in.read(1);
        if (!first) {
          throw new InputError(
            `${this.#name} ends at byte ${at} without a trailer: the stream is incomplete`,
          );
        }
        if (frameKind(first[0]) === "trailer") {
          const rest = await readOrFail(this.#in, TRAILER_SIZE - 1, this.#name, "the trailer");
          const bytes = new Uint8Array(TRAILER_SIZE);
          bytes[0] = first[0];
          bytes.set(rest, 1);
          const trailer = decodeTrailer(bytes, counted, this.#hash);
          if (!(await this.#in.atEnd())) {
            throw new InputError(
              `${this.#name} has extra bytes after its trailer at byte ${this.#in.position}`,
            );
          }
          this.#trailer = trailer;
          return;
        }
        const rest = await readOrFail(this.#in, headerSize - 1, this.#name, "a record");
        const hb = new Uint8Array(headerSize);
        hb[0] = first[0];
        hb.set(rest, 1);
        const rec = decodeRecordHeader(hb, this.header.version);
        this.#hash.update(hb);
        if (rec.offset < end) {
          throw new InputError(
            `${this.#name}: record at ${rec.offset} overlaps or precedes the previous one (ends at ${end})`,
          );
        }
        if (rec.offset + rec.length > size) {
          throw new InputError(
            `${this.#name}: record ${rec.offset}+${rec.length} reaches past the disk size ${size}`,
          );
        }
        end = rec.offset + rec.length;
        counted.records++;
        const payloadPosition = this.#in.position;
        if (rec.kind === "zero") {
          counted.zeroBytes += rec.length;
          yield { rec, payloadPosition };
          continue;
        }
        counted.dataBytes += rec.length;
        counted.storedBytes += rec.storedLength;
        if (!withPayloads) {
          if (!(await this.#in.skip(rec.storedLength))) {
            throw new InputError(
              `${this.#name} is truncated: it ends inside a record starting at byte ${at}`,
            );
          }
          yield { rec, payloadPosition };
          continue;
        }
        let payload: Uint8Array;
        if (borrowed && this.#in.buffered < rec.storedLength) {
          if (scratch.length < rec.storedLength) scratch = new Uint8Array(rec.storedLength);
          payload = scratch.subarray(0, rec.storedLength);
          await readIntoOrFail(this.#in, payload, this.#name, "a record");
        } else {
          payload = await readOrFail(this.#in, rec.storedLength, this.#name, "a record");
        }
        if (streamHashCoversPayloads(this.header.version)) this.#hash.update(payload);
        yield { rec, payloadPosition, payload };
      }
    } catch (err) {
      throw named(err, this.#name);
    } finally {
      await this.#in.cancel();
    }
  }
}

async function readOrFail(
  input: ByteReader,
  n: number,
  name: string,
  what: string,
): Promise<Uint8Array> {
  const start = input.position;
  let bytes: Uint8Array | null;
  try {
    bytes = await input.read(n);
  } catch (err) {
    throw wrapError(err, SourceError, `cannot read ${name}: ${describeError(err)}`);
  }
  if (!bytes) {
    throw new InputError(
      `${name} is truncated: it ends at byte ${input.position} inside ${what} starting at byte ${start}`,
    );
  }
  return bytes;
}

async function readIntoOrFail(
  input: ByteReader,
  dest: Uint8Array,
  name: string,
  what: string,
): Promise<void> {
  const start = input.position;
  let complete: boolean;
  try {
    complete = await input.readInto(dest);
  } catch (err) {
    throw wrapError(err, SourceError, `cannot read ${name}: ${describeError(err)}`);
  }
  if (!complete) {
    throw new InputError(
      `${name} is truncated: it ends at byte ${input.position} inside ${what} starting at byte ${start}`,
    );
  }
}

/** Prefixes the stream name to format errors that do not carry it yet. */
function named(err: unknown, name: string): unknown {
  if (err instanceof InputError && !err.message.startsWith(name)) {
    return wrapError(err, InputError, `${name}: ${err.message}`);
  }
  return err;
}

/** Opens a stream file for reading; SourceError naming it if it cannot be opened. */
export async function openStreamPath(path: string): Promise<Deno.FsFile> {
  try {
    return await Deno.open(path, { read: true });
  } catch (err) {
    throw wrapError(err, SourceError, `cannot open backup stream '${path}': ${describeError(err)}`);
  }
}

/**
 * Opens a stream file for sequential reading (SourceError if it cannot be
 * opened): payloads are read from the file straight into their buffers, and
 * {@link StreamReader.recordHeaders} seeks past them instead of reading them.
 */
export async function openStreamFile(path: string): Promise<StreamReader> {
  const file = await openStreamPath(path);
  return await StreamReader.open(file, path);
}

/** Reads a stream from standard input. */
export function openStreamStdin(): Promise<StreamReader> {
  return StreamReader.open(Deno.stdin.readable, "stdin");
}
