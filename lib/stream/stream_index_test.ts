/**
 * Stream indexes (headers only, kept as STREAM.idx) and the chain served
 * from them: the same disk as the fully verified chain, holes told from
 * zero records, a stale or damaged index rebuilt, a version 1 stream
 * indexed by hashing its payloads, a corrupt payload refused when read.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { InputError } from "../core/errors.ts";
import { ChainSource } from "./chain_source.ts";
import { decodeIndex, encodeIndex } from "./index_layout.ts";
import { indexChain, indexPathOf, indexStream } from "./stream_index.ts";
import { StreamWriter } from "./writer.ts";
import type { StreamHeaderInit } from "./format.ts";
import { pseudoRandom } from "../../tests/fixtures/bytes.ts";
import { withDir } from "../../tests/helpers.ts";

const KiB = 1 << 10;
const MiB = 1 << 20;
const SIZE = 3 * MiB + 5000;

async function writeStream(
  path: string,
  init: Partial<StreamHeaderInit>,
  records: { offset: number; data?: Uint8Array; zero?: number }[],
): Promise<void> {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  const w = new StreamWriter(file.writable, {
    disk: "vda",
    virtualSize: SIZE,
    blockSize: 64 * KiB,
    level: "full",
    backupId: "F",
    parentId: null,
    chainId: "F",
    checkpoint: "",
    compression: "zstd:1",
    ...init,
  }, { workers: 0 });
  for (const r of records) {
    if (r.data) await w.writeData(r.offset, r.data);
    else await w.writeZero(r.offset, r.zero!);
  }
  await w.finish();
}

/** A full (compressible and random data, a zero run, a hole) and a differential on it. */
async function writeChain(dir: string): Promise<string[]> {
  const full = join(dir, "full.dbit");
  const diff = join(dir, "diff.dbit");
  await writeStream(full, {}, [
    { offset: 0, data: new Uint8Array(MiB).fill(7) },
    { offset: MiB, data: pseudoRandom(256 * KiB, 3) },
    { offset: MiB + 256 * KiB, zero: 256 * KiB },
    { offset: 3 * MiB, data: pseudoRandom(5000, 4) },
  ]);
  await writeStream(diff, { level: "differential", backupId: "D", parentId: "F" }, [
    { offset: 64 * KiB, zero: 64 * KiB },
    { offset: MiB + 128 * KiB, data: new Uint8Array(256 * KiB).fill(9) },
  ]);
  return [full, diff];
}

Deno.test("a chain from its indexes reads as the verified chain; holes and zeros told apart", async () => {
  await withDir(async (dir) => {
    const paths = await writeChain(dir);
    const verified = await ChainSource.open(paths);
    const indexed = await ChainSource.fromIndexes(paths, await indexChain(paths), 300 * KiB);
    try {
      assert.deepEqual(await indexed.read(0, SIZE), await verified.read(0, SIZE));
      assert.deepEqual(
        await indexed.read(MiB - 100, 300 * KiB),
        await verified.read(MiB - 100, 300 * KiB),
      );
      assert.deepEqual(indexed.allocation(0, SIZE), [
        { offset: 0, length: 64 * KiB, kind: "data" },
        { offset: 64 * KiB, length: 64 * KiB, kind: "zero" },
        { offset: 128 * KiB, length: MiB + 256 * KiB, kind: "data" },
        { offset: MiB + 384 * KiB, length: 128 * KiB, kind: "zero" },
        { offset: MiB + 512 * KiB, length: 3 * MiB - (MiB + 512 * KiB), kind: "hole" },
        { offset: 3 * MiB, length: 5000, kind: "data" },
      ]);
      assert.deepEqual(indexed.allocation(70 * KiB, 10), [
        { offset: 70 * KiB, length: 10, kind: "zero" },
      ]);
      assert.deepEqual(await indexed.map(), await verified.map());
    } finally {
      await verified.close();
      await indexed.close();
    }
  });
});

Deno.test("the index is kept beside the stream, reused, and rebuilt when stale or damaged", async () => {
  await withDir(async (dir) => {
    const [full] = await writeChain(dir);
    const logs: string[] = [];
    const log = (_: string, text: string) => void logs.push(text);
    const first = await indexStream(full, log);
    const kept = await Deno.readFile(indexPathOf(full));
    assert.deepEqual(logs, []);
    assert.deepEqual((await indexStream(full, log)).records, first.records);
    assert.deepEqual(await Deno.readFile(indexPathOf(full)), kept, "not rewritten");
    const damaged = kept.slice();
    damaged[120] ^= 1;
    await Deno.writeFile(indexPathOf(full), damaged);
    assert.deepEqual((await indexStream(full, log)).records, first.records);
    assert.match(logs.pop()!, /rebuilding .*full\.dbit\.idx: its checksum does not match/);
    await Deno.utime(full, new Date(), new Date(Date.now() + 5000));
    await indexStream(full, log);
    assert.match(logs.pop()!, /the stream changed since it was written/);
  });
});

Deno.test("index layout: round trip; another stream's identity or a cut index is stale", () => {
  const trailer = new Uint8Array(64).fill(5);
  const identity = { size: 1000, mtimeMs: 123456, trailer };
  const records = [
    {
      kind: "data" as const,
      compressed: true,
      storedLength: 10,
      offset: 0,
      length: 4096,
      checksum: 2n ** 63n + 1n,
      payloadChecksum: 77n,
      payloadPosition: 300,
    },
    {
      kind: "zero" as const,
      compressed: false,
      storedLength: 0,
      offset: 4096,
      length: 2 ** 40,
      checksum: 0n,
      payloadChecksum: 0n,
      payloadPosition: 0,
    },
  ];
  const bytes = encodeIndex(identity, records);
  assert.deepEqual(decodeIndex(bytes, identity), { records });
  assert.ok("stale" in decodeIndex(bytes, { ...identity, size: 1001 }));
  assert.ok("stale" in decodeIndex(bytes, { ...identity, trailer: new Uint8Array(64) }));
  assert.deepEqual(decodeIndex(bytes.subarray(0, 150), identity), { stale: "it is truncated" });
  assert.ok("stale" in decodeIndex(new Uint8Array(10), identity));
});

Deno.test("a version 1 stream is indexed too (its payloads hashed for the stream checksum)", async () => {
  await withDir(async (dir) => {
    const fixture = new URL("../../tests/fixtures/streams/v1-full.dbit", import.meta.url).pathname;
    const path = join(dir, "v1.dbit");
    await Deno.copyFile(fixture, path);
    const index = await indexStream(path);
    assert.equal(index.header.version, 1);
    const indexed = await ChainSource.fromIndexes([path], [index]);
    const verified = await ChainSource.open([path]);
    try {
      assert.deepEqual(await indexed.read(0, indexed.size), await verified.read(0, indexed.size));
    } finally {
      await indexed.close();
      await verified.close();
    }
  });
});

Deno.test("a corrupt payload is refused when read, and only there; a cut stream when indexed", async () => {
  await withDir(async (dir) => {
    const paths = await writeChain(dir);
    const indexes = await indexChain(paths);
    const rec = indexes[0].records[1];
    assert.equal(rec.offset, MiB);
    const bytes = await Deno.readFile(paths[0]);
    bytes[rec.payloadPosition + 10] ^= 1;
    await Deno.writeFile(paths[0], bytes);
    const chain = await ChainSource.fromIndexes(paths, indexes);
    try {
      await assert.rejects(
        chain.read(MiB, 4 * KiB),
        /full\.dbit: record at 1048576: data checksum mismatch/,
      );
      // Not cached: it fails again.
      await assert.rejects(chain.read(MiB + 4 * KiB, 4 * KiB), InputError);
      assert.deepEqual(await chain.read(0, 4 * KiB), new Uint8Array(4 * KiB).fill(7));
    } finally {
      await chain.close();
    }
    await Deno.writeFile(paths[1], (await Deno.readFile(paths[1])).subarray(0, 200));
    await Deno.remove(indexPathOf(paths[1]));
    await assert.rejects(indexChain(paths), InputError);
  });
});

Deno.test("lent bytes stay as read while the cache drops and reuses records, until released", async () => {
  await withDir(async (dir) => {
    const paths = await writeChain(dir);
    const verified = await ChainSource.open(paths);
    // Room for one record: every other read drops the one before.
    const chain = await ChainSource.fromIndexes(paths, await indexChain(paths), 1);
    try {
      const want = await verified.read(0, 64 * KiB);
      const lent = await chain.lend(0, 64 * KiB);
      for (let round = 0; round < 3; round++) {
        assert.deepEqual(await chain.read(MiB, 256 * KiB), await verified.read(MiB, 256 * KiB));
        const other = await chain.lend(3 * MiB, 5000);
        assert.deepEqual(other.bytes, await verified.read(3 * MiB, 5000));
        other.release();
      }
      assert.deepEqual(lent.bytes, want);
      lent.release();
      lent.release();
      assert.deepEqual(await chain.read(0, SIZE), await verified.read(0, SIZE));
    } finally {
      await verified.close();
      await chain.close();
    }
  });
});
