/**
 * Backup stream integration: real pipes (through `cat`), stream files, and a
 * ChainSource over a full and two incrementals compared with applying the
 * same changes to a buffer by hand.
 */
import assert from "node:assert/strict";
import { ChainError, InputError } from "../lib/core/errors.ts";
import { ChainSource } from "../lib/stream/chain_source.ts";
import type { StreamHeaderInit } from "../lib/stream/format.ts";
import { openStreamFile, StreamReader } from "../lib/stream/reader.ts";
import { StreamWriter } from "../lib/stream/writer.ts";
import { pseudoRandom as random } from "./fixtures/bytes.ts";

const MiB = 1 << 20;
const SIZE = 8 * MiB + 4321; // not a multiple of the block size

function headerOf(over: Partial<StreamHeaderInit>): StreamHeaderInit {
  return {
    disk: "vda",
    virtualSize: SIZE,
    blockSize: 65536,
    level: "full",
    backupId: "F",
    parentId: null,
    chainId: "C",
    checkpoint: "cp",
    compression: "zstd:3",
    metadata: { vm: "i-2-10-VM" },
    ...over,
  };
}

type Change = { offset: number; data?: Uint8Array; zero?: number };

async function writeStream(
  sink: WritableStream<Uint8Array>,
  h: StreamHeaderInit,
  changes: Change[],
) {
  const w = new StreamWriter(sink, h, { workers: 2 });
  for (const c of changes) {
    if (c.data) await w.writeData(c.offset, c.data);
    else await w.writeZero(c.offset, c.zero!);
  }
  return await w.finish();
}

async function writeFile(path: string, h: StreamHeaderInit, changes: Change[]) {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  return await writeStream(file.writable, h, changes);
}

function apply(disk: Uint8Array, changes: Change[]): void {
  for (const c of changes) {
    if (c.data) disk.set(c.data, c.offset);
    else disk.fill(0, c.offset, c.offset + c.zero!);
  }
}

Deno.test("a stream round-trips through a real pipe (cat)", async () => {
  const cat = new Deno.Command("cat", { stdin: "piped", stdout: "piped" }).spawn();
  try {
    const changes: Change[] = [
      { offset: 0, data: random(3 * MiB + 17, 1) },
      { offset: 4 * MiB, zero: MiB },
      { offset: SIZE - 4321, data: new Uint8Array(4321).fill(9) },
    ];
    const reading = (async () => {
      const r = await StreamReader.open(cat.stdout, "pipe");
      const disk = new Uint8Array(SIZE);
      for await (const rec of r.records()) if (rec.kind === "data") disk.set(rec.data, rec.offset);
      return { disk, trailer: r.trailer, header: r.header };
    })();
    const written = await writeStream(cat.stdin, headerOf({}), changes);
    const got = await reading;
    const expect = new Uint8Array(SIZE);
    apply(expect, changes);
    assert.deepEqual(got.disk, expect);
    assert.deepEqual(got.trailer, written);
    assert.deepEqual(got.header.metadata, { vm: "i-2-10-VM" });
    assert.equal((await cat.status).code, 0);
  } finally {
    try {
      cat.kill();
    } catch { /* already exited */ }
  }
});

Deno.test("ChainSource equals a full plus two incrementals applied by hand", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-chain-" });
  try {
    const full: Change[] = [
      { offset: 0, data: random(2 * MiB, 1) },
      { offset: 2 * MiB, zero: MiB },
      { offset: 5 * MiB, data: random(MiB + 100, 2) },
      { offset: SIZE - 4000, data: random(4000, 3) },
    ];
    const inc1: Change[] = [
      { offset: 65536, data: random(65536, 4) },
      { offset: 5 * MiB + 50, zero: 200_000 },
      { offset: 7 * MiB, data: random(3 * 65536, 5) },
    ];
    const inc2: Change[] = [
      { offset: 0, zero: 131072 },
      { offset: 5 * MiB + 100_000, data: random(65536, 6) },
      { offset: SIZE - 1000, data: random(1000, 7) },
    ];
    const paths = ["full", "inc1", "inc2"].map((n) => `${dir}/${n}.dbs`);
    await writeFile(paths[0], headerOf({}), full);
    await writeFile(
      paths[1],
      headerOf({ level: "incremental", backupId: "I1", parentId: "F" }),
      inc1,
    );
    await writeFile(
      paths[2],
      headerOf({ level: "incremental", backupId: "I2", parentId: "I1" }),
      inc2,
    );
    const expect = new Uint8Array(SIZE);
    for (const c of [full, inc1, inc2]) apply(expect, c);

    const src = await ChainSource.open(paths);
    try {
      assert.equal(src.size, SIZE);
      const map = await src.map();
      assert.equal(map[0].offset, 0);
      assert.equal(map.reduce((n, e) => n + e.length, 0), SIZE);
      // Every data byte is where the map says; zero ranges really are zero.
      for (const e of map) {
        if (e.kind === "zero") {
          assert.ok(expect.subarray(e.offset, e.offset + e.length).every((b) => b === 0));
        }
      }
      // Read in odd-sized pieces that straddle records and streams.
      const got = new Uint8Array(SIZE);
      for (let at = 0; at < SIZE; at += 777_777) {
        const n = Math.min(777_777, SIZE - at);
        got.set(await src.read(at, n), at);
      }
      assert.deepEqual(got, expect);
      assert.deepEqual(
        await src.read(5 * MiB + 99_990, 20),
        expect.subarray(5 * MiB + 99_990, 5 * MiB + 100_010),
      );
    } finally {
      await src.close();
    }

    await assert.rejects(ChainSource.open([paths[0], paths[2]]), ChainError);
    await assert.rejects(ChainSource.open([paths[1]]), ChainError);

    const corrupt = await Deno.readFile(paths[1]);
    corrupt[corrupt.length - 100] ^= 1;
    await Deno.writeFile(paths[1], corrupt);
    await assert.rejects(ChainSource.open(paths), InputError);
    await Deno.writeFile(paths[1], corrupt.subarray(0, 5000));
    await assert.rejects(
      openStreamFile(paths[1]).then(async (r) => {
        for await (const _ of r.records());
      }),
      /truncated|incomplete/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
