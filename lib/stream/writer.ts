/**
 * Writes a dirtybit backup stream strictly sequentially to any byte sink
 * (file, pipe, Bacula). Records whose sample says they shrink are compressed
 * and framed in a shared Worker pool while their output order is kept; the
 * others are stored raw at once.
 *
 * @module
 */
import { Xxh64 } from "@node-rs/xxhash";
import { describeError, TargetError, wrapError } from "../core/errors.ts";
import { acquireRecordPool, type RecordPoolHandle } from "./record_pool.ts";
import {
  checksumOfDigests,
  completeHeader,
  compressionLevel,
  encodeHeader,
  encodeRecordHeader,
  encodeTrailer,
  payloadChecksum,
  RECORD_HEADER_SIZE,
  sameDataChecksum,
  streamHashCoversPayloads,
  type StreamHeader,
  type StreamHeaderInit,
  type StreamTrailer,
  zeroRecordHeader,
} from "./format.ts";
import { encodeDataRecordInPlace } from "./data_record.ts";
import { zstdMayShrink } from "./zstd.ts";
import type { DataRecord } from "./reader.ts";

/** Uncompressed size at which the writer cuts data into records. */
export const RECORD_DATA_TARGET = 1 << 20;

/** Writer tuning. */
export interface StreamWriterOptions {
  /**
   * Record workers (shared process-wide); 0 compresses inline on the
   * calling thread. Default when compressing: the CPUs beyond two, up to 4
   * ({@link defaultWorkers}).
   */
  readonly workers?: number;
}

/** Size of a reusable record buffer: room for the header and a full piece of data. */
const RECORD_BUFFER_SIZE = RECORD_HEADER_SIZE + RECORD_DATA_TARGET;

const releasingSinks = new WeakSet<WritableStream<Uint8Array>>();

/**
 * Declares that `sink` is done with every chunk once its write resolves
 * (a file, a pipe, PTCOMM packets it copies): StreamWriter then reuses record
 * buffers for it instead of allocating a fresh megabyte per record. Sinks
 * that keep chunks (in memory, or queued in a TransformStream) must not be
 * marked. Returns `sink`.
 */
export function chunkReleasingSink(sink: WritableStream<Uint8Array>): WritableStream<Uint8Array> {
  releasingSinks.add(sink);
  return sink;
}

/**
 * Record workers for a machine with `cpus` CPUs: those beyond the two that
 * the reading thread and QEMU's NBD server keep busy, at most 4. On 2 CPUs a
 * worker only adds its start (0.5 s of CPU when loaded) and a late turn per
 * record: a full backup of the benchmark's half random, half text disk ran
 * at 0.47-0.54x of nbdcopy with 2 workers taking records when idle, and
 * 0.63-0.82x compressing inline.
 */
export function defaultWorkers(cpus: number): number {
  return Math.max(0, Math.min(4, cpus - 2));
}

type Totals = { records: number; dataBytes: number; zeroBytes: number; storedBytes: number };

/** Writes one stream: header at construction, then records in offset order, then `finish`. */
export class StreamWriter {
  /** The header as written (version and creation time filled in). */
  readonly header: StreamHeader;
  readonly #out: WritableStreamDefaultWriter<Uint8Array>;
  readonly #hash = new Xxh64();
  readonly #level: number;
  readonly #pool: RecordPoolHandle | null;
  readonly #maxInFlight: number;
  /** Record buffers to reuse; null when the sink may keep chunks. */
  readonly #spares: ArrayBuffer[] | null;
  readonly #totals: Totals = { records: 0, dataBytes: 0, zeroBytes: 0, storedBytes: 0 };
  #queue: Promise<void>;
  #inFlight = 0;
  #waiters: (() => void)[] = [];
  #error: Error | null = null;
  #end = 0;
  #state: "open" | "finishing" | "finished" | "aborted" = "open";
  #written = 0;
  /** Bytes of a data record that go into the stream checksum. */
  readonly #hashedOfData: number;

  /** Starts a stream on `sink` (RangeError for an invalid header: a caller bug). */
  constructor(
    sink: WritableStream<Uint8Array>,
    header: StreamHeaderInit,
    opts?: StreamWriterOptions,
  ) {
    this.header = completeHeader(header);
    this.#level = compressionLevel(this.header.compression);
    this.#hashedOfData = streamHashCoversPayloads(this.header.version)
      ? Infinity
      : RECORD_HEADER_SIZE;
    const workers = this.#level === 0
      ? 0
      : opts?.workers ?? defaultWorkers(navigator.hardwareConcurrency);
    this.#pool = workers > 0 ? acquireRecordPool(workers) : null;
    this.#maxInFlight = Math.max(2, workers * 2);
    this.#spares = releasingSinks.has(sink) ? [] : null;
    this.#out = sink.getWriter();
    this.#queue = Promise.resolve();
    this.#enqueue(Promise.resolve(encodeHeader(this.header)), Infinity);
  }

  /**
   * Adds the data of `[offset, offset + data.length)`. Ranges must come in
   * ascending order without overlap. `data` may be reused once this resolves.
   *
   * `blockHashes`, for data starting on a block boundary: the xxHash64 of
   * each of its blocks (the last may be short), as the hash DB has them.
   * Records then get their checksums from those instead of hashing the data
   * again.
   */
  async writeData(
    offset: number,
    data: Uint8Array,
    blockHashes?: BigUint64Array,
  ): Promise<void> {
    this.#checkRange(offset, data.length);
    const { blockSize } = this.header;
    const perBlock = blockHashes !== undefined && offset % blockSize === 0 &&
      RECORD_DATA_TARGET % blockSize === 0;
    if (perBlock && blockHashes.length !== Math.ceil(data.length / blockSize)) {
      throw new RangeError(
        `${blockHashes.length} block hashes for ${data.length} bytes of ${blockSize}-byte blocks`,
      );
    }
    for (let at = 0; at < data.length; at += RECORD_DATA_TARGET) {
      const piece = data.subarray(at, Math.min(at + RECORD_DATA_TARGET, data.length));
      const checksum = perBlock
        ? checksumOfDigests(
          blockHashes.subarray(at / blockSize, Math.ceil((at + piece.length) / blockSize)),
        )
        : undefined;
      this.#enqueue(this.#dataFrame(offset + at, piece, checksum), this.#hashedOfData);
      this.#totals.records++;
      this.#totals.dataBytes += piece.length;
      await this.#slot();
    }
  }

  /**
   * Adds a data record read (and verified) from a stream with header `from`:
   * copied as stored, without compressing it again, when its data checksum
   * holds unchanged here and this stream compresses or the record is not
   * compressed; else written as {@link writeData} of its data. Same ordering
   * rule. `rec` may be reused once this resolves (a borrowed record of a
   * stream reader: see RecordsOptions.borrowed): its payload is copied behind
   * the header into a record buffer, reused when the sink releases chunks.
   */
  async copyRecord(from: StreamHeader, rec: DataRecord): Promise<void> {
    if (!sameDataChecksum(from, this.header) || (rec.compressed && this.#level === 0)) {
      return await this.writeData(rec.offset, rec.data);
    }
    this.#checkRange(rec.offset, rec.length);
    const buf = this.#recordBuffer(RECORD_HEADER_SIZE + rec.storedLength)
      .subarray(0, RECORD_HEADER_SIZE + rec.storedLength);
    encodeRecordHeader({
      kind: "data",
      compressed: rec.compressed,
      storedLength: rec.storedLength,
      offset: rec.offset,
      length: rec.length,
      checksum: rec.checksum,
      // A version 3 source has it (verified); an older one's compressed payload gets it here.
      payloadChecksum: rec.compressed ? rec.payloadChecksum || payloadChecksum(rec.stored) : 0n,
    }, buf);
    buf.set(rec.stored, RECORD_HEADER_SIZE);
    this.#enqueue(Promise.resolve(buf), this.#hashedOfData);
    this.#totals.records++;
    this.#totals.dataBytes += rec.length;
    this.#totals.storedBytes += rec.storedLength;
    await this.#slot();
  }

  /** Records that `[offset, offset + length)` reads as zeros. Same ordering rule. */
  async writeZero(offset: number, length: number): Promise<void> {
    this.#checkRange(offset, length);
    if (length === 0) return;
    const frame = encodeRecordHeader(zeroRecordHeader(offset, length));
    this.#enqueue(Promise.resolve(frame), Infinity);
    this.#totals.records++;
    this.#totals.zeroBytes += length;
    await this.#slot();
  }

  /** Stream bytes handed to the sink so far (header, records and, once finished, trailer). */
  get bytesWritten(): number {
    return this.#written;
  }

  /** Writes the trailer, closes the sink and returns the totals. */
  async finish(): Promise<StreamTrailer> {
    this.#checkOpen();
    this.#state = "finishing";
    try {
      await this.#queue;
      this.#throwIfFailed();
      const { bytes, trailer } = encodeTrailer(this.#totals, this.#hash);
      await this.#out.write(bytes);
      this.#written += bytes.length;
      await this.#out.close();
      this.#state = "finished";
      return trailer;
    } catch (err) {
      this.#error ??= sinkError(err);
      this.abort();
      throw this.#error;
    } finally {
      this.#pool?.release();
    }
  }

  /** Abandons the stream: the sink is aborted and no trailer is written. Safe to call twice. */
  abort(): void {
    if (this.#state === "aborted" || this.#state === "finished") return;
    this.#state = "aborted";
    this.#error ??= new TargetError("backup stream was aborted before its end");
    this.#out.abort(this.#error).catch(() => {});
    this.#pool?.release();
    this.#wake(Infinity);
  }

  #checkOpen(): void {
    if (this.#state !== "open") throw new RangeError(`stream writer is ${this.#state}`);
  }

  #checkRange(offset: number, length: number): void {
    this.#checkOpen();
    this.#throwIfFailed();
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || length < 0) {
      throw new RangeError(`invalid record range ${offset}+${length}`);
    }
    if (offset < this.#end) {
      throw new RangeError(`record at ${offset} is before the end of the previous (${this.#end})`);
    }
    if (offset + length > this.header.virtualSize) {
      throw new RangeError(
        `record ${offset}+${length} reaches past the disk size ${this.header.virtualSize}`,
      );
    }
    if (length > 0) this.#end = offset + length;
  }

  #throwIfFailed(): void {
    if (this.#error) throw this.#error;
  }

  /**
   * The record for one piece. Only a record whose sample says it shrinks is
   * compressed, in a worker if one is idle, else here and now: a worker's
   * turn comes late on a busy machine, and a record stored raw is only a copy
   * and a header. Waiting for workers held a backup of half random, half
   * text data at 0.34-0.54x of nbdcopy on a loaded 2-core machine.
   */
  #dataFrame(offset: number, piece: Uint8Array, checksum?: bigint): Promise<Uint8Array> {
    const counted = (record: Uint8Array) => {
      this.#totals.storedBytes += record.length - RECORD_HEADER_SIZE;
      return record;
    };
    // A copy the record owns: the caller may reuse `piece` once writeData resolves.
    const buf = this.#recordBuffer(RECORD_HEADER_SIZE + piece.length);
    buf.set(piece, RECORD_HEADER_SIZE);
    const spec = {
      offset,
      length: piece.length,
      level: this.#level > 0 && zstdMayShrink(piece) ? this.#level : 0,
      blockSize: this.header.blockSize,
      checksum,
    };
    if (!this.#pool || spec.level === 0 || !this.#pool.idle()) {
      return Promise.resolve(counted(encodeDataRecordInPlace(buf, spec)));
    }
    return this.#pool.encode(buf, spec).then(({ record, spare }) => {
      if (spare) this.#recycle(spare);
      return counted(record);
    });
  }

  /**
   * A buffer for a record of `size` bytes that the writer owns until the sink
   * has it: a spare when the sink releases chunks and the record fits one
   * (then the whole spare, for a worker to take), else a new one.
   */
  #recordBuffer(size: number): Uint8Array {
    if (!this.#spares || size > RECORD_BUFFER_SIZE) return new Uint8Array(size);
    const spare = this.#spares.pop();
    return spare ? new Uint8Array(spare) : new Uint8Array(RECORD_BUFFER_SIZE);
  }

  /**
   * Keeps a record buffer for the next record: a written record's, when the
   * sink let go of it, or one a compact record was made from. Two are enough
   * to keep the workers fed; more would only hold memory.
   */
  #recycle(bytes: Uint8Array): void {
    const spares = this.#spares;
    if (spares && bytes.buffer.byteLength === RECORD_BUFFER_SIZE && spares.length < 2) {
      spares.push(bytes.buffer as ArrayBuffer);
    }
  }

  /** Queues a frame for the sink; its first `hashed` bytes go into the stream checksum. */
  #enqueue(frame: Promise<Uint8Array>, hashed: number): void {
    // A rejected frame must not go unhandled before its turn in the queue comes.
    frame.catch(() => {});
    this.#inFlight++;
    this.#queue = this.#queue.then(async () => {
      try {
        if (this.#error) return;
        const bytes = await frame;
        if (hashed > 0) {
          this.#hash.update(hashed < bytes.length ? bytes.subarray(0, hashed) : bytes);
        }
        await this.#out.write(bytes);
        this.#written += bytes.length;
        this.#recycle(bytes);
      } catch (err) {
        this.#error ??= sinkError(err);
      } finally {
        this.#inFlight--;
        this.#wake(1);
      }
    });
  }

  async #slot(): Promise<void> {
    while (this.#inFlight >= this.#maxInFlight && !this.#error) {
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    this.#throwIfFailed();
  }

  #wake(count: number): void {
    for (let i = 0; i < count && this.#waiters.length > 0; i++) this.#waiters.shift()!();
  }
}

function sinkError(err: unknown): Error {
  if (err instanceof TargetError) return err;
  return wrapError(err, TargetError, `cannot write the backup stream: ${describeError(err)}`);
}
