import assert from "node:assert/strict";
import { encodeDataRecordInPlace } from "./data_record.ts";
import { dataChecksum, decodeRecordHeader, RECORD_HEADER_SIZE, STREAM_VERSION } from "./format.ts";
import { zstdDecompressExact } from "./zstd.ts";
import { xxh64 } from "@node-rs/xxhash";
import { pseudoRandom } from "../../tests/fixtures/bytes.ts";

const B = 4096;
const v3 = { version: STREAM_VERSION, blockSize: B };

function recordBuffer(data: Uint8Array, room = 0): Uint8Array {
  const buf = new Uint8Array(RECORD_HEADER_SIZE + data.length + room);
  buf.set(data, RECORD_HEADER_SIZE);
  return buf;
}

Deno.test("a compressible record is compressed in place, in front of what is left of the buffer", () => {
  const data = new Uint8Array(65536).map((_, i) => (i >> 8) & 0xff);
  const buf = recordBuffer(data, 4096);
  const spec = { offset: 1 << 20, length: data.length, level: 3, blockSize: B };
  const record = encodeDataRecordInPlace(buf, spec);
  assert.equal(record.buffer, buf.buffer);
  assert.equal(record.byteOffset, 0);
  const h = decodeRecordHeader(record.subarray(0, RECORD_HEADER_SIZE), STREAM_VERSION);
  assert.equal(h.compressed, true);
  assert.equal(h.offset, 1 << 20);
  assert.equal(h.length, data.length);
  assert.equal(h.checksum, dataChecksum(v3, 1 << 20, data));
  assert.equal(record.length, RECORD_HEADER_SIZE + h.storedLength);
  const payload = record.subarray(RECORD_HEADER_SIZE);
  assert.equal(h.payloadChecksum, xxh64(payload));
  assert.deepEqual(zstdDecompressExact(payload, data.length, "test"), data);
});

Deno.test("incompressible data and level 0 are stored as they are", () => {
  // 64 KiB is compressed whole to find out; 1 MiB is judged by its sample.
  for (const data of [pseudoRandom(65536, 3), pseudoRandom(1 << 20, 4)]) {
    for (const level of [0, 3]) {
      const spec = { offset: 0, length: data.length, level, blockSize: B };
      const record = encodeDataRecordInPlace(recordBuffer(data), spec);
      const h = decodeRecordHeader(record.subarray(0, RECORD_HEADER_SIZE), STREAM_VERSION);
      assert.equal(h.compressed, false);
      assert.equal(h.storedLength, data.length);
      assert.equal(h.checksum, dataChecksum(v3, 0, data));
      assert.equal(h.payloadChecksum, 0n, "the data checksum covers raw stored bytes");
      assert.deepEqual(record.subarray(RECORD_HEADER_SIZE), data);
    }
  }
});

Deno.test("a checksum the caller has is taken as it is, not computed again", () => {
  const data = new Uint8Array(1000).fill(7);
  const spec = { offset: 0, length: data.length, level: 0, blockSize: B, checksum: 42n };
  const record = encodeDataRecordInPlace(recordBuffer(data), spec);
  assert.equal(
    decodeRecordHeader(record.subarray(0, RECORD_HEADER_SIZE), STREAM_VERSION).checksum,
    42n,
  );
});

Deno.test("zstdDecompressExact into a given buffer: the data lands there; a wrong size is refused", () => {
  const data = new Uint8Array(65536).map((_, i) => (i >> 6) & 0xff);
  const frame = encodeDataRecordInPlace(recordBuffer(data), {
    offset: 0,
    length: data.length,
    level: 3,
    blockSize: B,
  }).subarray(RECORD_HEADER_SIZE);
  const into = new Uint8Array(data.length + 100);
  const out = zstdDecompressExact(frame, data.length, "here", into);
  assert.equal(out.buffer, into.buffer);
  assert.deepEqual(out, data);
  assert.throws(() => zstdDecompressExact(frame, data.length - 1, "here", into), /here: zstd/);
  assert.throws(() => zstdDecompressExact(frame, data.length + 1, "here", into), /here: zstd/);
});
