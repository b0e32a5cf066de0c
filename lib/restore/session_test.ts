import assert from "node:assert/strict";
import { CancelledError, ChainError, InputError, TargetError } from "../core/errors.ts";
import { concatBytes } from "../core/bytes.ts";
import { completeHeader, type StreamHeaderInit } from "../stream/format.ts";
import { StreamReader } from "../stream/reader.ts";
import { StreamWriter } from "../stream/writer.ts";
import { checkNextStream, copyRecords, RestoreSession } from "./session.ts";
import type { RestoreTarget } from "../targets/target.ts";
import { assertRejects, withDir } from "../../tests/helpers.ts";

const KiB = 1 << 10;
const SIZE = 256 * KiB;

const base: StreamHeaderInit = {
  disk: "vda",
  virtualSize: SIZE,
  blockSize: 64 * KiB,
  level: "full",
  backupId: "F",
  parentId: null,
  chainId: "F",
  checkpoint: "",
  compression: "none",
};
const full = base;
const inc1: StreamHeaderInit = { ...base, level: "incremental", backupId: "I1", parentId: "F" };
const inc2: StreamHeaderInit = { ...base, level: "incremental", backupId: "I2", parentId: "I1" };

type Part = { offset: number; data: Uint8Array } | { offset: number; zero: number };

/** A stream's bytes as the writer makes them. */
async function streamOf(header: StreamHeaderInit, parts: Part[]): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const sink = new WritableStream<Uint8Array>({ write: (c) => void chunks.push(c.slice()) });
  const w = new StreamWriter(sink, header, { workers: 1 });
  for (const p of parts) {
    if ("data" in p) await w.writeData(p.offset, p.data);
    else await w.writeZero(p.offset, p.zero);
  }
  await w.finish();
  return concatBytes(...chunks);
}

/** `bytes` as a stream of one chunk. */
function readable(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(c) {
      c.enqueue(bytes);
      c.close();
    },
  });
}
const filled = (length: number, byte: number) => new Uint8Array(length).fill(byte);

/** A full of 0x11 with a zero hole at 64-128 KiB, and an incremental writing 0x22 at 192 KiB. */
async function chain(): Promise<{ full: Uint8Array; inc1: Uint8Array; expected: Uint8Array }> {
  const expected = filled(SIZE, 0x11);
  expected.fill(0, 64 * KiB, 128 * KiB);
  expected.fill(0x22, 192 * KiB, 256 * KiB);
  return {
    full: await streamOf(full, [
      { offset: 0, data: filled(64 * KiB, 0x11) },
      { offset: 64 * KiB, zero: 64 * KiB },
      { offset: 128 * KiB, data: filled(128 * KiB, 0x11) },
    ]),
    inc1: await streamOf(inc1, [{ offset: 192 * KiB, data: filled(64 * KiB, 0x22) }]),
    expected,
  };
}

Deno.test("a full then an incremental restore the disk; the sidecar records the last one", () =>
  withDir(async (dir) => {
    const path = `${dir}/vda.raw`;
    const streams = await chain();
    const session = await RestoreSession.open({ path });
    assert.deepEqual(await session.apply(readable(streams.full)), {
      backupId: "F",
      level: "full",
      disk: "vda",
      bytes: 192 * KiB,
    });
    // Across sessions, as one Bacula job per stream applies them.
    const next = await RestoreSession.open({ path });
    assert.equal((await next.apply(readable(streams.inc1))).bytes, 64 * KiB);
    assert.deepEqual(await Deno.readFile(path), streams.expected);
    const sidecar = JSON.parse(await Deno.readTextFile(`${path}.dbit.json`));
    assert.equal(sidecar.format, "raw");
    assert.equal(sidecar.last.backupId, "I1");
    assert.equal(sidecar.applying, undefined);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
      "vda.raw",
      "vda.raw.dbit.json",
    ]);
  }));

Deno.test("an incremental needs its full applied first, and its parent last", () =>
  withDir(async (dir) => {
    const path = `${dir}/vda.raw`;
    const streams = await chain();
    const session = await RestoreSession.open({ path });
    await assertRejects(() => session.apply(readable(streams.inc1)), ChainError, "full first");
    await session.apply(readable(streams.full));
    const skipped = await streamOf(inc2, [{ offset: 0, data: filled(64 * KiB, 0x33) }]);
    await assertRejects(() => session.apply(readable(skipped)), ChainError);
    // A refused stream leaves the target as the full made it.
    assert.equal((await Deno.readFile(path))[0], 0x11);
  }));

Deno.test("a file that is not a restore target is kept unless forced", () =>
  withDir(async (dir) => {
    const path = `${dir}/precious.raw`;
    await Deno.writeTextFile(path, "not a disk");
    const { full: stream } = await chain();
    const session = await RestoreSession.open({ path });
    await assertRejects(
      () => session.apply(readable(stream)),
      TargetError,
      "is not a dirtybit restore target",
    );
    assert.equal(await Deno.readTextFile(path), "not a disk");
    const forced = await RestoreSession.open({ path, force: true });
    await forced.apply(readable(stream));
    assert.equal((await Deno.stat(path)).size, SIZE);
  }));

Deno.test("a full that fails midway leaves the previous target and no .partial", () =>
  withDir(async (dir) => {
    const path = `${dir}/vda.raw`;
    const streams = await chain();
    const session = await RestoreSession.open({ path });
    await session.apply(readable(streams.full));
    const before = await Deno.readFile(path);
    const other = await streamOf({ ...full, backupId: "F2", chainId: "F2" }, [
      { offset: 0, data: filled(SIZE, 0x44) },
    ]);
    await assertRejects(
      () => session.apply(readable(other.subarray(0, other.length - 100))),
      InputError,
      "truncated",
    );
    assert.deepEqual(await Deno.readFile(path), before);
    assert.equal(await Deno.stat(`${path}.partial`).then(() => true, () => false), false);
  }));

Deno.test("an incremental cut off marks the target incomplete until a full replaces it", () =>
  withDir(async (dir) => {
    const path = `${dir}/vda.raw`;
    const streams = await chain();
    const session = await RestoreSession.open({ path });
    await session.apply(readable(streams.full));
    await assertRejects(
      () => session.apply(readable(streams.inc1.subarray(0, streams.inc1.length - 100))),
      InputError,
      "truncated",
    );
    const sidecar = JSON.parse(await Deno.readTextFile(`${path}.dbit.json`));
    assert.equal(sidecar.applying, "I1");
    await assertRejects(() => session.apply(readable(streams.inc1)), ChainError, "incomplete");
    await session.apply(readable(streams.full));
    await session.apply(readable(streams.inc1));
    assert.deepEqual(await Deno.readFile(path), streams.expected);
  }));

Deno.test("a cancelled full throws CancelledError and leaves nothing behind", () =>
  withDir(async (dir) => {
    const path = `${dir}/vda.raw`;
    const { full: stream } = await chain();
    const abort = new AbortController();
    abort.abort();
    const session = await RestoreSession.open({ path, signal: abort.signal });
    await assertRejects(() => session.apply(readable(stream)), CancelledError);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  }));

Deno.test("checkNextStream: incomplete target, nothing applied, wrong parent", () => {
  const last = completeHeader(full);
  const next = completeHeader(inc1);
  checkNextStream("t", { last }, next);
  assert.throws(() => checkNextStream("t", { last, applying: "I1" }, next), /left incomplete/);
  assert.throws(() => checkNextStream("t", null, next), /needs its parent F/);
  assert.throws(() => checkNextStream("t", { last }, completeHeader(inc2)), ChainError);
});

Deno.test("copyRecords writes zero records only when asked to", async () => {
  const stream = await streamOf(full, [
    { offset: 0, data: filled(64 * KiB, 1) },
    { offset: 64 * KiB, zero: 192 * KiB },
  ]);
  for (const skipZeros of [true, false]) {
    const calls: string[] = [];
    const target: RestoreTarget = {
      size: SIZE,
      writeData: (offset, data) =>
        Promise.resolve(void calls.push(`data ${offset}+${data.length}`)),
      writeZero: (offset, length) => Promise.resolve(void calls.push(`zero ${offset}+${length}`)),
      flush: () => Promise.resolve(),
      close: () => Promise.resolve(),
    };
    const reader = await StreamReader.open(readable(stream));
    assert.equal(await copyRecords(reader, target, { skipZeros }), 64 * KiB);
    assert.deepEqual(
      calls,
      skipZeros ? ["data 0+65536"] : ["data 0+65536", `zero 65536+${192 * KiB}`],
    );
  }
});
