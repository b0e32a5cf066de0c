/**
 * The layout of a stream index file (`STREAM.idx`): a stream's record
 * headers and payload positions, so that serving it again need not scan the
 * stream. Pure encoder and decoder, no I/O; stream_index.ts reads and writes
 * them. The index says which stream it describes (size, modification time,
 * trailer bytes) and carries its own checksum; any mismatch means "rebuild".
 * The byte layout is in docs/serve.md.
 *
 * @module
 */
import { xxh64 } from "@node-rs/xxhash";
import { FLAG_ZSTD, RecordKind, TRAILER_SIZE } from "./format.ts";
import type { IndexedRecordHeader } from "./reader.ts";

const MAGIC = new TextEncoder().encode("DBITIDX1");
const HEAD_SIZE = 96;
const RECORD_SIZE = 48;

/** Which stream file an index describes. */
export interface IndexedStreamIdentity {
  readonly size: number;
  readonly mtimeMs: number;
  /** The stream's last TRAILER_SIZE bytes. */
  readonly trailer: Uint8Array;
}

/** Encodes the index of a stream with `identity` and `records`. */
export function encodeIndex(
  identity: IndexedStreamIdentity,
  records: readonly IndexedRecordHeader[],
): Uint8Array {
  const out = new Uint8Array(HEAD_SIZE + records.length * RECORD_SIZE + 8);
  const v = new DataView(out.buffer);
  out.set(MAGIC, 0);
  v.setBigUint64(8, BigInt(identity.size), true);
  v.setBigUint64(16, BigInt(Math.trunc(identity.mtimeMs)), true);
  out.set(identity.trailer.subarray(0, TRAILER_SIZE), 24);
  v.setBigUint64(88, BigInt(records.length), true);
  for (const [i, r] of records.entries()) {
    const at = HEAD_SIZE + i * RECORD_SIZE;
    out[at] = RecordKind[r.kind];
    out[at + 1] = r.compressed ? FLAG_ZSTD : 0;
    v.setUint32(at + 4, r.storedLength, true);
    v.setBigUint64(at + 8, BigInt(r.offset), true);
    v.setBigUint64(at + 16, BigInt(r.length), true);
    v.setBigUint64(at + 24, r.checksum, true);
    v.setBigUint64(at + 32, r.payloadChecksum, true);
    v.setBigUint64(at + 40, BigInt(r.payloadPosition), true);
  }
  v.setBigUint64(out.length - 8, xxh64(out.subarray(0, -8)), true);
  return out;
}

/**
 * The records of an index, if `bytes` is a whole, intact index of the
 * stream with `identity`; otherwise why not (then it is rebuilt).
 */
export function decodeIndex(
  bytes: Uint8Array,
  identity: IndexedStreamIdentity,
): { records: IndexedRecordHeader[] } | { stale: string } {
  if (bytes.length < HEAD_SIZE + 8 || !MAGIC.every((b, i) => bytes[i] === b)) {
    return { stale: "it is not a dirtybit stream index" };
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = Number(v.getBigUint64(88, true));
  if (bytes.length !== HEAD_SIZE + count * RECORD_SIZE + 8) return { stale: "it is truncated" };
  if (xxh64(bytes.subarray(0, -8)) !== v.getBigUint64(bytes.length - 8, true)) {
    return { stale: "its checksum does not match" };
  }
  const trailer = bytes.subarray(24, 24 + TRAILER_SIZE);
  if (
    Number(v.getBigUint64(8, true)) !== identity.size ||
    Number(v.getBigUint64(16, true)) !== Math.trunc(identity.mtimeMs) ||
    !trailer.every((b, i) => identity.trailer[i] === b)
  ) {
    return { stale: "the stream changed since it was written" };
  }
  const records: IndexedRecordHeader[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const at = HEAD_SIZE + i * RECORD_SIZE;
    records[i] = {
      kind: bytes[at] === RecordKind.data ? "data" : "zero",
      compressed: (bytes[at + 1] & FLAG_ZSTD) !== 0,
      storedLength: v.getUint32(at + 4, true),
      offset: Number(v.getBigUint64(at + 8, true)),
      length: Number(v.getBigUint64(at + 16, true)),
      checksum: v.getBigUint64(at + 24, true),
      payloadChecksum: v.getBigUint64(at + 32, true),
      payloadPosition: Number(v.getBigUint64(at + 40, true)),
    };
  }
  return { records };
}
