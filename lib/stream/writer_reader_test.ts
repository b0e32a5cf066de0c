import assert from "node:assert/strict";
import { xxh64 } from "@node-rs/xxhash";
import { InputError, TargetError } from "../core/errors.ts";
import type { StreamHeaderInit } from "./format.ts";
import { openStreamFile, StreamReader, type StreamRecord } from "./reader.ts";
import { chunkReleasingSink, defaultWorkers, RECORD_DATA_TARGET, StreamWriter } from "./writer.ts";
import { pseudoRandom as random } from "../../tests/fixtures/bytes.ts";

/**
 * Keeps what is written. A `releasing` sink copies each chunk, as files and
 * pipes are done with it once written, and says so to the writer.
 */
function memorySink(releasing = false) {
  const chunks: Uint8Array[] = [];
  const buffers = new Set<ArrayBufferLike>();
  const stream = new WritableStream<Uint8Array>({
    write(c) {
      buffers.add(c.buffer);
      chunks.push(releasing ? c.slice() : c);
    },
  });
  const sink = releasing ? chunkReleasingSink(stream) : stream;
  return {
    sink,
    /** How many writes went by (header, records, trailer) and in how many distinct buffers. */
    writes: () => ({ chunks: chunks.length, buffers: buffers.size }),
    bytes(): Uint8Array {
      const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
      let at = 0;
      for (const c of chunks) (out.set(c, at), at += c.length);
      return out;
    },
  };
}

/** A source that hands out `bytes` in chunks of varying sizes (as a pipe would). */
function chunkedSource(bytes: Uint8Array, seed = 7): ReadableStream<Uint8Array> {
  let at = 0;
  let s = seed;
  return new ReadableStream({
    pull(ctl) {
      if (at >= bytes.length) return ctl.close();
      s = (s * 1103515245 + 12345) % 2 ** 31;
      const n = 1 + (s % 70000);
      ctl.enqueue(bytes.slice(at, at + n));
      at += n;
    },
  });
}

const header = (compression: StreamHeaderInit["compression"]): StreamHeaderInit => ({
  disk: "vda",
  virtualSize: 5 * 1024 * 1024 + 12345,
  blockSize: 65536,
  level: "full",
  backupId: "full-1",
  parentId: null,
  chainId: "chain-1",
  checkpoint: "cp1",
  compression,
});

function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let s = seed;
  for (let i = 0; i < length; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    // Half compressible, half random: both record kinds of payload appear.
    out[i] = i % 8192 < 4096 ? (i >> 6) & 0xff : s >>> 24;
  }
  return out;
}

async function writeSample(
  compression: StreamHeaderInit["compression"],
  workers?: number,
  releasing = false,
) {
  const mem = memorySink(releasing);
  const w = new StreamWriter(mem.sink, header(compression), { workers });
  const reused = new Uint8Array(3 * RECORD_DATA_TARGET + 100);
  const expect: { offset: number; data?: Uint8Array; length: number }[] = [];
  reused.set(pattern(reused.length, 1));
  expect.push({ offset: 0, data: reused.slice(), length: reused.length });
  await w.writeData(0, reused);
  reused.fill(0xee); // the writer must have copied what it needs
  await w.writeZero(reused.length, 65536);
  expect.push({ offset: reused.length + 65536, length: 65536 });
  const tail = random(12345, 2);
  const tailAt = 5 * 1024 * 1024;
  await w.writeData(tailAt, tail);
  expect.push({ offset: tailAt, data: tail, length: tail.length });
  const trailer = await w.finish();
  return { bytes: mem.bytes(), trailer, writes: mem.writes() };
}

async function readAll(src: ReadableStream<Uint8Array>) {
  const r = await StreamReader.open(src);
  const recs: StreamRecord[] = [];
  for await (const rec of r.records()) recs.push(rec);
  return { header: r.header, recs, trailer: r.trailer };
}

function flatten(recs: StreamRecord[], size: number): Uint8Array {
  const disk = new Uint8Array(size);
  for (const r of recs) if (r.kind === "data") disk.set(r.data, r.offset);
  return disk;
}

const configs = [["none", 0], ["zstd:3", 0], ["zstd:3", 2]] as const;
for (
  const [[compression, workers], releasing] of configs.flatMap((c) =>
    [[c, false], [c, true]] as const
  )
) {
  const sinkKind = releasing
    ? "a chunk-releasing sink (buffers reused)"
    : "a sink that keeps chunks";
  Deno.test(`round trip ${compression} with ${workers} workers into ${sinkKind}`, async () => {
    const { bytes, trailer, writes } = await writeSample(compression, workers, releasing);
    // Inline, a reused buffer is the same object; one lent to a worker comes back as a new one.
    if (releasing && workers === 0) {
      assert.ok(writes.buffers < writes.chunks, "record buffers were reused");
    }
    const got = await readAll(chunkedSource(bytes));
    assert.deepEqual(got.trailer, trailer);
    assert.equal(got.header.compression, compression);
    const offsets = got.recs.map((r) => [r.kind, r.offset, r.length]);
    assert.deepEqual(offsets, [
      ["data", 0, RECORD_DATA_TARGET],
      ["data", RECORD_DATA_TARGET, RECORD_DATA_TARGET],
      ["data", 2 * RECORD_DATA_TARGET, RECORD_DATA_TARGET],
      ["data", 3 * RECORD_DATA_TARGET, 100],
      ["zero", 3 * RECORD_DATA_TARGET + 100, 65536],
      ["data", 5 * 1024 * 1024, 12345],
    ]);
    const disk = flatten(got.recs, header("none").virtualSize);
    assert.deepEqual(
      disk.subarray(0, 3 * RECORD_DATA_TARGET + 100),
      pattern(3 * RECORD_DATA_TARGET + 100, 1),
    );
    assert.deepEqual(disk.subarray(5 * 1024 * 1024), random(12345, 2));
    assert.equal(trailer.records, 6);
    assert.equal(trailer.zeroBytes, 65536);
    assert.equal(trailer.dataBytes, 3 * RECORD_DATA_TARGET + 100 + 12345);
    if (compression === "none") assert.equal(trailer.storedBytes, trailer.dataBytes);
    else {
      assert.ok(trailer.storedBytes < trailer.dataBytes);
      assert.ok(got.recs.some((r) => r.kind === "data" && !r.compressed), "random data stored raw");
    }
  });
}

for (const releasing of [false, true]) {
  Deno.test(`zstd in workers keeps the record order under load (chunk-releasing sink: ${releasing})`, async () => {
    // Well-compressed records come back as compact copies; their buffers are reused when releasing.
    const mem = memorySink(releasing);
    const w = new StreamWriter(mem.sink, { ...header("zstd:1"), virtualSize: 64 << 20 }, {
      workers: 3,
    });
    const buf = new Uint8Array(65536);
    for (let i = 0; i < 400; i++) {
      // Alternate tiny-to-compress and incompressible payloads so workers finish out of order.
      buf.set(i % 2 ? pattern(65536, i) : new Uint8Array(65536).fill(i & 0xff));
      await w.writeData(i * 65536 * 2, buf);
    }
    await w.finish();
    const got = await readAll(chunkedSource(mem.bytes()));
    assert.equal(got.recs.length, 400);
    got.recs.forEach((r, i) => {
      assert.equal(r.offset, i * 65536 * 2);
      assert.ok(r.kind === "data");
      if (i % 2 === 0) assert.ok(r.data.every((b) => b === (i & 0xff)));
      else assert.deepEqual(r.data, pattern(65536, i));
    });
  });
}

for (const workers of [0, 2]) {
  Deno.test(`records whose sample does not shrink are stored raw, others compressed (${workers} workers)`, async () => {
    const mem = memorySink();
    const w = new StreamWriter(mem.sink, header("zstd:3"), { workers });
    const noise = random(RECORD_DATA_TARGET, 11);
    const ramp = new Uint8Array(RECORD_DATA_TARGET).map((_, i) => (i >> 6) & 0xff);
    for (const [i, data] of [noise, ramp, noise].entries()) {
      await w.writeData(i * RECORD_DATA_TARGET, data);
    }
    const trailer = await w.finish();
    const { recs } = await readAll(chunkedSource(mem.bytes()));
    assert.deepEqual(recs.map((r) => r.kind === "data" && r.compressed), [false, true, false]);
    assert.equal(
      trailer.storedBytes,
      2 * RECORD_DATA_TARGET + (recs[1] as { storedLength: number }).storedLength,
    );
    const disk = flatten(recs, header("zstd:3").virtualSize);
    assert.deepEqual(
      disk.subarray(0, 3 * RECORD_DATA_TARGET),
      new Uint8Array([...noise, ...ramp, ...noise]),
    );
  });
}

Deno.test("record workers by default: the CPUs beyond two, at most 4", () => {
  assert.deepEqual([1, 2, 3, 4, 6, 64].map(defaultWorkers), [0, 0, 1, 2, 4, 4]);
});

Deno.test("truncation at any byte is an InputError", async () => {
  const { bytes } = await writeSample("zstd:3", 0);
  // Every byte near the structure boundaries, plus a stride through the payloads.
  const cuts = new Set<number>();
  for (let i = 0; i < 400; i++) cuts.add(i);
  for (let i = bytes.length - 200; i < bytes.length; i++) cuts.add(i);
  for (let i = 0; i < bytes.length; i += 997) cuts.add(i);
  for (const cut of cuts) {
    await assert.rejects(
      readAll(chunkedSource(bytes.subarray(0, cut), cut)),
      InputError,
      `cut ${cut}`,
    );
  }
});

Deno.test("corruption of any single byte is an InputError", async () => {
  const { bytes } = await writeSample("zstd:3", 0);
  const positions = new Set<number>();
  for (let i = 0; i < 300; i++) positions.add(i);
  for (let i = bytes.length - 300; i < bytes.length; i++) positions.add(i);
  for (let i = 0; i < bytes.length; i += 4999) positions.add(i);
  for (const at of positions) {
    const bad = bytes.slice();
    bad[at] ^= 1 << (at % 8);
    await assert.rejects(readAll(chunkedSource(bad)), InputError, `byte ${at}`);
  }
});

Deno.test("a changed payload byte is caught by its record's data checksum", async () => {
  const { bytes } = await writeSample("none", 0);
  for (let at = 200; at < bytes.length - 200; at += 997) {
    const bad = bytes.slice();
    bad[at] ^= 0x20;
    await assert.rejects(readAll(chunkedSource(bad)), InputError, `byte ${at}`);
  }
});

Deno.test("records checksummed from the caller's block hashes are the same bytes", async () => {
  const fixed = { ...header("zstd:3"), createdAt: "2026-01-01T00:00:00.000Z" };
  const data = pattern(2 * RECORD_DATA_TARGET + 5000, 3);
  const blockHashes = new BigUint64Array(Math.ceil(data.length / 65536));
  for (let i = 0; i < blockHashes.length; i++) {
    blockHashes[i] = xxh64(data.subarray(i * 65536, (i + 1) * 65536));
  }
  const write = async (hashes?: BigUint64Array) => {
    const mem = memorySink();
    const w = new StreamWriter(mem.sink, fixed, { workers: 0 });
    await w.writeData(65536, data, hashes);
    await w.finish();
    return mem.bytes();
  };
  assert.deepEqual(await write(blockHashes), await write());
  const w = new StreamWriter(memorySink().sink, fixed, { workers: 0 });
  await assert.rejects(w.writeData(0, data, blockHashes.subarray(1)), /block hashes for/);
  w.abort();
});

Deno.test("trailing garbage and empty input are InputErrors", async () => {
  const { bytes } = await writeSample("none", 0);
  const longer = new Uint8Array(bytes.length + 1);
  longer.set(bytes);
  await assert.rejects(readAll(chunkedSource(longer)), /extra bytes after its trailer/);
  await assert.rejects(readAll(chunkedSource(new Uint8Array(0))), InputError);
});

Deno.test("writer refuses out-of-order and out-of-disk records", async () => {
  const w = new StreamWriter(memorySink().sink, header("none"));
  await w.writeData(65536, new Uint8Array(10));
  await assert.rejects(w.writeData(0, new Uint8Array(10)), RangeError);
  await assert.rejects(w.writeZero(header("none").virtualSize - 5, 10), RangeError);
  w.abort();
});

Deno.test("a failing sink becomes a TargetError", async () => {
  const sink = new WritableStream<Uint8Array>({
    write() {
      throw new Error("EPIPE");
    },
  });
  const w = new StreamWriter(sink, header("none"));
  await assert.rejects(
    (async () => {
      for (let i = 0; i < 10; i++) await w.writeData(i * 100, new Uint8Array(100));
      await w.finish();
    })(),
    TargetError,
  );
  w.abort();
});

Deno.test("copyRecord copies a compressed record as stored, re-encodes it for an uncompressed stream", async () => {
  const source = memorySink();
  const w = new StreamWriter(source.sink, header("zstd:3"), { workers: 0 });
  const data = new Uint8Array(RECORD_DATA_TARGET).fill(0x5a);
  await w.writeData(0, data);
  await w.finish();
  const copy = async (compression: StreamHeaderInit["compression"]) => {
    const reader = await StreamReader.open(chunkedSource(source.bytes()));
    const out = memorySink();
    const copier = new StreamWriter(out.sink, header(compression), { workers: 0 });
    for await (const rec of reader.records()) {
      if (rec.kind === "data") await copier.copyRecord(reader.header, rec);
    }
    await copier.finish();
    const again = await StreamReader.open(chunkedSource(out.bytes()));
    const records = await Array.fromAsync(again.records());
    return records[0] as Extract<StreamRecord, { kind: "data" }>;
  };
  const stored = await copy("zstd:3");
  assert.equal(stored.compressed, true);
  assert.deepEqual(stored.data, data);
  const plain = await copy("none");
  assert.equal(plain.compressed, false);
  assert.deepEqual(plain.data, data);
});

Deno.test("lazy records: compressed data decompressed on first use, every byte still checked", async () => {
  const { bytes } = await writeSample("zstd:3", 0);
  const eager = await readAll(chunkedSource(bytes));
  const r = await StreamReader.open(chunkedSource(bytes));
  const lazy = await Array.fromAsync(r.records({ lazy: true }));
  assert.ok(lazy.some((rec) => rec.kind === "data" && rec.compressed), "a compressed record");
  assert.deepEqual(
    flatten(lazy, eager.header.virtualSize),
    flatten(eager.recs, eager.header.virtualSize),
  );
  // A changed stored byte fails the read at once (payload checksum, or the stream hash at the end).
  for (let at = 200; at < bytes.length - 200; at += 997) {
    const bad = bytes.slice();
    bad[at] ^= 0x20;
    const reader = await StreamReader.open(chunkedSource(bad)).catch(() => null);
    if (!reader) continue;
    await assert.rejects(Array.fromAsync(reader.records({ lazy: true })), InputError, `byte ${at}`);
  }
});

Deno.test("borrowed records from a file: one payload buffer reused, the same data as fresh ones", async () => {
  for (const compression of ["none", "zstd:3"] as const) {
    const { bytes } = await writeSample(compression, 0);
    const eager = await readAll(chunkedSource(bytes));
    const path = await Deno.makeTempFile();
    try {
      await Deno.writeFile(path, bytes);
      const reader = await openStreamFile(path);
      const disk = new Uint8Array(eager.header.virtualSize);
      const buffers = new Set<ArrayBufferLike>();
      let records = 0;
      for await (const rec of reader.records({ lazy: true, borrowed: true })) {
        if (rec.kind !== "data") continue;
        records++;
        buffers.add(rec.stored.buffer);
        // Used before the next record is asked for, as the borrowing rule says.
        disk.set(rec.data, rec.offset);
      }
      assert.deepEqual(disk, flatten(eager.recs, eager.header.virtualSize));
      // The scratch buffer (grown once at most) and small payloads seen in the read chunk.
      assert.ok(buffers.size < records, `${buffers.size} buffers for ${records} records`);
      assert.deepEqual(reader.trailer, eager.trailer);
    } finally {
      await Deno.remove(path);
    }
  }
});
