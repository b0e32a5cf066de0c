import assert from "node:assert/strict";
import { Xxh64, xxh64 } from "@node-rs/xxhash";
import { InputError } from "../core/errors.ts";
import {
  checksumOfDigests,
  completeHeader,
  compressionLevel,
  dataChecksum,
  decodeHeader,
  decodeRecordHeader,
  decodeTrailer,
  encodeHeader,
  encodeRecordHeader,
  encodeTrailer,
  type RecordHeader,
  STREAM_VERSION,
  type StreamHeaderInit,
} from "./format.ts";

const init: StreamHeaderInit = {
  disk: "vda",
  virtualSize: 10 << 20,
  blockSize: 65536,
  level: "incremental",
  backupId: "b2",
  parentId: "b1",
  chainId: "c1",
  checkpoint: "dirtybit-b2",
  compression: "zstd:3",
  metadata: { domain: "<domain/>" },
};

Deno.test("header round trip keeps every field", () => {
  const header = completeHeader({ ...init, createdAt: "2025-01-02T03:04:05.000Z" });
  assert.deepEqual(decodeHeader(encodeHeader(header)), header);
  assert.equal(header.version, 3);
});

Deno.test("header without metadata and full level round-trips", () => {
  const { metadata: _, ...rest } = init;
  const header = completeHeader({ ...rest, level: "full", parentId: null });
  assert.deepEqual(decodeHeader(encodeHeader(header)), header);
});

Deno.test("invalid header fields are rejected on write and on read", () => {
  assert.throws(() => completeHeader({ ...init, parentId: null }), RangeError);
  assert.throws(() => completeHeader({ ...init, level: "full" }), RangeError);
  assert.throws(() => completeHeader({ ...init, blockSize: 1000 }), RangeError);
  assert.throws(() => completeHeader({ ...init, compression: "zstd:0" }), RangeError);
  assert.throws(() => completeHeader({ ...init, disk: "" }), RangeError);
  assert.throws(() => completeHeader({ ...init, virtualSize: -1 }), RangeError);
});

Deno.test("compression levels parse", () => {
  assert.equal(compressionLevel("none"), 0);
  assert.equal(compressionLevel("zstd:19"), 19);
  assert.throws(() => compressionLevel("zstd:23"), RangeError);
  assert.throws(() => compressionLevel("gzip"), RangeError);
});

Deno.test("every single-byte corruption of a header is rejected", () => {
  const bytes = encodeHeader(completeHeader(init));
  for (let i = 0; i < bytes.length; i++) {
    for (const flip of [0x01, 0x80, 0xff]) {
      const bad = bytes.slice();
      bad[i] ^= flip;
      assert.throws(() => decodeHeader(bad), InputError, `byte ${i} ^ ${flip}`);
    }
  }
});

Deno.test("bad magic and unknown version have their own messages", () => {
  const bytes = encodeHeader(completeHeader(init));
  const magic = bytes.slice();
  magic[0] = 0x41;
  assert.throws(() => decodeHeader(magic), /bad magic/);
  const version = bytes.slice();
  version[8] = 4;
  assert.throws(
    () => decodeHeader(version),
    /version 4 is not supported \(this dirtybit reads versions 1, 2 and 3\)/,
  );
});

Deno.test("version 1 and 2 headers are still read, with their version", () => {
  for (const version of [1, 2]) {
    const header = { ...completeHeader(init), version };
    assert.equal(decodeHeader(encodeHeader(header)).version, version);
  }
});

Deno.test("version 2 data checksums hash the digests of pieces cut at disk block boundaries", () => {
  const B = 512;
  const data = crypto.getRandomValues(new Uint8Array(2000));
  // From offset 100: pieces of 412, 512, 512, 512 and 52 bytes.
  const cuts = [0, 412, 924, 1436, 1948, 2000];
  const digests = new BigUint64Array(cuts.length - 1);
  for (let i = 0; i + 1 < cuts.length; i++) digests[i] = xxh64(data.subarray(cuts[i], cuts[i + 1]));
  const bytes = new Uint8Array(digests.length * 8);
  digests.forEach((d, i) => new DataView(bytes.buffer).setBigUint64(i * 8, d, true));
  const expected = xxh64(bytes);
  assert.equal(checksumOfDigests(digests), expected);
  assert.equal(dataChecksum({ version: STREAM_VERSION, blockSize: B }, 100, data), expected);
  // Aligned data: one digest per block, the last one short.
  const aligned = dataChecksum({ version: 2, blockSize: B }, 1024, data);
  const blocks = new BigUint64Array(4);
  for (let i = 0; i < 4; i++) blocks[i] = xxh64(data.subarray(i * B, Math.min((i + 1) * B, 2000)));
  assert.equal(aligned, checksumOfDigests(blocks));
  assert.equal(dataChecksum({ version: 1, blockSize: B }, 100, data), xxh64(data));
});

/** 7 bytes stored raw at offset 0, data checksum 5. */
const RAW_7: RecordHeader = {
  kind: "data",
  compressed: false,
  storedLength: 7,
  offset: 0,
  length: 7,
  checksum: 5n,
  payloadChecksum: 0n,
};

Deno.test("record headers round-trip and every corrupted byte is caught", () => {
  const recs: RecordHeader[] = [
    {
      kind: "data",
      compressed: true,
      storedLength: 1000,
      offset: 65536,
      length: 4096,
      checksum: 0x1234567890abcdefn,
      payloadChecksum: 0xfedcba0987654321n,
    },
    RAW_7,
    {
      kind: "zero",
      compressed: false,
      storedLength: 0,
      offset: 2 ** 40,
      length: 2 ** 33,
      checksum: 0n,
      payloadChecksum: 0n,
    },
  ];
  for (const rec of recs) {
    const bytes = encodeRecordHeader(rec);
    assert.deepEqual(decodeRecordHeader(bytes, STREAM_VERSION), rec);
    for (let i = 0; i < bytes.length; i++) {
      const bad = bytes.slice();
      bad[i] ^= 0x10;
      assert.throws(() => decodeRecordHeader(bad, STREAM_VERSION), InputError, `byte ${i}`);
    }
  }
});

Deno.test("a version 2 record header is 40 bytes and carries no payload checksum", () => {
  const v2 = new Uint8Array(40);
  const view = new DataView(v2.buffer);
  v2[0] = 1;
  view.setUint32(4, 7, true);
  view.setBigUint64(16, 7n, true);
  view.setBigUint64(24, 5n, true);
  view.setBigUint64(32, xxh64(v2.subarray(0, 32)), true);
  assert.deepEqual(decodeRecordHeader(v2, 2), RAW_7);
  assert.throws(() => decodeRecordHeader(v2, 3), RangeError);
});

Deno.test("inconsistent record headers are rejected even with a valid checksum", () => {
  const cases: (Omit<RecordHeader, "payloadChecksum"> & { payloadChecksum?: bigint })[] = [
    { kind: "data", compressed: false, storedLength: 10, offset: 0, length: 11, checksum: 0n },
    { kind: "data", compressed: true, storedLength: 11, offset: 0, length: 11, checksum: 0n },
    { kind: "data", compressed: false, storedLength: 0, offset: 0, length: 0, checksum: 0n },
    {
      kind: "data",
      compressed: false,
      storedLength: 8 << 20,
      offset: 0,
      length: 8 << 20,
      checksum: 0n,
    },
    { kind: "zero", compressed: false, storedLength: 3, offset: 0, length: 3, checksum: 0n },
    {
      kind: "zero",
      compressed: false,
      storedLength: 0,
      offset: 0,
      length: 3,
      checksum: 0n,
      payloadChecksum: 1n,
    },
    {
      kind: "data",
      compressed: false,
      storedLength: 3,
      offset: 0,
      length: 3,
      checksum: 0n,
      payloadChecksum: 1n,
    },
  ];
  for (const rec of cases) {
    const bytes = encodeRecordHeader({ payloadChecksum: 0n, ...rec });
    assert.throws(() => decodeRecordHeader(bytes, STREAM_VERSION), InputError);
  }
});

Deno.test("trailer verifies totals, checksum and end magic", () => {
  const totals = { records: 3, dataBytes: 100, zeroBytes: 50, storedBytes: 60 };
  const prefix = new Uint8Array([1, 2, 3]);
  const hashOf = () => new Xxh64().update(prefix);
  const { bytes, trailer } = encodeTrailer(totals, hashOf());
  assert.deepEqual(decodeTrailer(bytes, totals, hashOf()), trailer);
  assert.throws(
    () => decodeTrailer(bytes, { ...totals, records: 2 }, hashOf()),
    /records=3 but the stream holds 2/,
  );
  assert.throws(() => decodeTrailer(bytes, totals, new Xxh64()), /checksum mismatch/);
  for (let i = 0; i < bytes.length; i++) {
    const bad = bytes.slice();
    bad[i] ^= 0x04;
    assert.throws(() => decodeTrailer(bad, totals, hashOf()), InputError, `byte ${i}`);
  }
});
