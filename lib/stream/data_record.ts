/**
 * One data record as it goes into a stream, built in place in one buffer:
 * the data sits after room for the header, is replaced by its zstd frame when
 * that is smaller, and the header goes in front. Pure; the writer runs it
 * inline or in its record workers, which keeps the checksum, compression and
 * framing of every megabyte off the thread that reads the disk, and lets
 * buffers be reused instead of allocating (and page-faulting) new ones.
 *
 * @module
 */
import { dataChecksum, encodeRecordHeader, RECORD_HEADER_SIZE, STREAM_VERSION } from "./format.ts";
import { zstdCompress } from "./zstd.ts";

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
  const z = level > 0 ? zstdCompress(data, level) : null;
  const compressed = z !== null && z.length < length;
  if (compressed) buf.set(z, RECORD_HEADER_SIZE);
  const storedLength = compressed ? z.length : length;
  encodeRecordHeader(
    { kind: "data", compressed, storedLength, offset, length, checksum },
    buf,
  );
  return buf.subarray(0, RECORD_HEADER_SIZE + storedLength);
}
