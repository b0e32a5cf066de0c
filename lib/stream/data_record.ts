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
import { xxh64 } from "@node-rs/xxhash";
import { encodeRecordHeader, RECORD_HEADER_SIZE } from "./format.ts";
import { zstdCompress } from "./zstd.ts";

/**
 * Encodes the record for the `length` bytes of disk data from `offset` that
 * `buf` holds at RECORD_HEADER_SIZE; `level` 0 stores them uncompressed.
 * Returns the record: a view of `buf` from its start.
 */
export function encodeDataRecordInPlace(
  buf: Uint8Array,
  offset: number,
  length: number,
  level: number,
): Uint8Array {
  const data = buf.subarray(RECORD_HEADER_SIZE, RECORD_HEADER_SIZE + length);
  const checksum = xxh64(data);
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
