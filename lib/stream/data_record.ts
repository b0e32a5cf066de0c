/**
 * One data record as it goes into a stream, built in place in one buffer:
 * the data sits after room for the header, is replaced by its zstd frame when
 * that is smaller, and the header goes in front; and its data as it comes
 * back out, checked. Pure; the writer runs the encoding inline or in its
 * record workers, which keeps the checksums, compression and framing of
 * every megabyte off the thread that reads the disk, and lets buffers be
 * reused instead of allocating (and page-faulting) new ones.
 *
 * @module
 */
import {
  checkPayload,
  dataChecksum,
  encodeRecordHeader,
  payloadChecksum,
  RECORD_HEADER_SIZE,
  type RecordHeader,
  STREAM_VERSION,
  type StreamHeader,
} from "./format.ts";
import { InputError } from "../core/errors.ts";
import { zstdCompress, zstdDecompressExact } from "./zstd.ts";

/** What a data record is of, and how to store it. */
export interface DataRecordSpec {
  /** Disk offset of the data. */
  readonly offset: number;
  /** Bytes of data. */
  readonly length: number;
  /** zstd level; 0 stores the data uncompressed. */
  readonly level: number;
  /** The stream's block size (the data checksum's piece size). */
  readonly blockSize: number;
  /** The data checksum when the caller has it from the hash DB's block hashes; else computed. */
  readonly checksum?: bigint;
}

/**
 * Encodes the record for the `spec.length` bytes of disk data that `buf`
 * holds at RECORD_HEADER_SIZE. Returns the record: a view of `buf` from its
 * start.
 */
export function encodeDataRecordInPlace(buf: Uint8Array, spec: DataRecordSpec): Uint8Array {
  const { offset, length, level } = spec;
  const data = buf.subarray(RECORD_HEADER_SIZE, RECORD_HEADER_SIZE + length);
  const checksum = spec.checksum ??
    dataChecksum({ version: STREAM_VERSION, blockSize: spec.blockSize }, offset, data);
  const frame = level > 0 ? zstdCompress(data, level) : null;
  const z = frame && frame.length < length ? frame : null;
  if (z) buf.set(z, RECORD_HEADER_SIZE);
  const storedLength = z ? z.length : length;
  encodeRecordHeader({
    kind: "data",
    compressed: z !== null,
    storedLength,
    offset,
    length,
    checksum,
    payloadChecksum: z ? payloadChecksum(z) : 0n,
  }, buf);
  return buf.subarray(0, RECORD_HEADER_SIZE + storedLength);
}

/**
 * The disk data of a data record of a stream with `header`, from its stored
 * `payload`: the payload checksum is checked before decompression, the data
 * checksum after. InputError naming `where` for any mismatch. Returns
 * `payload` itself for an uncompressed record; a compressed one's data goes
 * into `into` (at least `rec.length` bytes) when given, else a new buffer.
 */
export function decodeDataPayload(
  header: Pick<StreamHeader, "version" | "blockSize">,
  rec: RecordHeader,
  payload: Uint8Array,
  where: string,
  into?: Uint8Array,
): Uint8Array {
  checkPayload(header.version, rec, payload, where);
  const data = rec.compressed ? zstdDecompressExact(payload, rec.length, where, into) : payload;
  if (dataChecksum(header, rec.offset, data) !== rec.checksum) {
    throw new InputError(`${where}: data checksum mismatch (corrupt stream)`);
  }
  return data;
}
