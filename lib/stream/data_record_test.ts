import assert from "node:assert/strict";
import { xxh64 } from "@node-rs/xxhash";
import { encodeDataRecordInPlace } from "./data_record.ts";
import { decodeRecordHeader, RECORD_HEADER_SIZE } from "./format.ts";
import { zstdDecompressExact } from "./zstd.ts";

function recordBuffer(data: Uint8Array, room = 0): Uint8Array {
  const buf = new Uint8Array(RECORD_HEADER_SIZE + data.length + room);
  buf.set(data, RECORD_HEADER_SIZE);
  return buf;
}

Deno.test("a compressible record is compressed in place, in front of what is left of the buffer", () => {
  const data = new Uint8Array(65536).map((_, i) => (i >> 8) & 0xff);
  const buf = recordBuffer(data, 4096);
  const record = encodeDataRecordInPlace(buf, 1 << 20, data.length, 3);
  assert.equal(record.buffer, buf.buffer);
  assert.equal(record.byteOffset, 0);
  const h = decodeRecordHeader(record.subarray(0, RECORD_HEADER_SIZE));
  assert.equal(h.compressed, true);
  assert.equal(h.offset, 1 << 20);
  assert.equal(h.length, data.length);
  assert.equal(h.checksum, xxh64(data));
  assert.equal(record.length, RECORD_HEADER_SIZE + h.storedLength);
  const payload = record.subarray(RECORD_HEADER_SIZE);
  assert.deepEqual(zstdDecompressExact(payload, data.length, "test"), data);
});

Deno.test("incompressible data and level 0 are stored as they are", () => {
  const data = crypto.getRandomValues(new Uint8Array(65536));
  for (const level of [0, 3]) {
    const record = encodeDataRecordInPlace(recordBuffer(data), 0, data.length, level);
    const h = decodeRecordHeader(record.subarray(0, RECORD_HEADER_SIZE));
    assert.equal(h.compressed, false);
    assert.equal(h.storedLength, data.length);
    assert.equal(h.checksum, xxh64(data));
    assert.deepEqual(record.subarray(RECORD_HEADER_SIZE), data);
  }
});
