/**
 * Integration tests of the backup engine against a real qemu-storage-daemon:
 * `dirtybit backup` and `restore` as child processes (and `runBackup`
 * in-process where the test must act during a backup), with `qemu-img
 * compare` against a copy of the guest disk taken at the backup's point in
 * time as the oracle.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Qsd, withQsd } from "./fixtures/qsd.ts";
import {
  assertSameImage,
  backupCli,
  type BackupSummary,
  cliCommand,
  dirtybitJson,
  dirtybitOk,
} from "./fixtures/cli.ts";
import { runBackup } from "../lib/backup/engine.ts";
import { loadDiskState } from "../lib/model/disk_state.ts";
import { lockStateDir } from "../lib/model/state_lock.ts";
import { queryBlockNodes } from "../lib/qemu/blocknodes.ts";
import { parseHolder } from "../lib/qemu/disk_lock.ts";
import type { StreamHeader, StreamTrailer } from "../lib/stream/format.ts";
import { delay } from "../lib/core/async.ts";
import { passThroughSink } from "../lib/sinks/sink.ts";

const KiB = 1 << 10;
const MiB = 1 << 20;
/** The dirty bitmap granularity of a qcow2 disk with 64 KiB clusters: the chain's block size. */
const BLOCK = 64 * KiB;

/** `dirtybit backup --json` of `nodes` of `qsd`: the summary, and stderr (warnings). */
async function backupWithWarnings(
  qsd: Qsd,
  stateDir: string,
  out: string,
  extra: string[] = [],
  nodes = ["disk0"],
): Promise<{ disks: BackupSummary[]; stderr: string }> {
  const r = await backupCli(qsd.sourceArgs(nodes), stateDir, out, extra);
  assert.equal(r.code, 0, `backup exited ${r.code}: ${r.stderr}`);
  return r;
}

/** `dirtybit backup --json` of `nodes` of `qsd`. */
async function backup(
  qsd: Qsd,
  stateDir: string,
  out: string,
  extra: string[] = [],
  nodes = ["disk0"],
): Promise<BackupSummary[]> {
  return (await backupWithWarnings(qsd, stateDir, out, extra, nodes)).disks;
}

/** `dirtybit inspect --json`. */
function inspect(stream: string): Promise<{ header: StreamHeader; trailer: StreamTrailer }> {
  return dirtybitJson(["inspect", stream]);
}

/** Bytes of the blocks that `[offset, offset + length)` touches, clipped to the disk end. */
function blockAligned(offset: number, length: number, diskSize = Infinity): number {
  const start = Math.floor(offset / BLOCK) * BLOCK;
  return Math.min(diskSize, Math.ceil((offset + length) / BLOCK) * BLOCK) - start;
}

/** What the QSD holds besides the guest's exports and disks: must be nothing after a job. */
async function assertNoLeftovers(qsd: Qsd, stateDir: string, nodes = ["disk0"]): Promise<void> {
  const qmp = await qsd.qmp();
  try {
    const exports = await qmp.execute<{ id: string }[]>("query-block-exports");
    assert.deepEqual(exports.map((e) => e.id).filter((id) => !id.startsWith("vm")), []);
    const named = await qmp.execute<
      { "node-name": string; "dirty-bitmaps"?: { name: string }[] }[]
    >(
      "query-named-block-nodes",
    );
    assert.deepEqual(named.map((n) => n["node-name"]).filter((n) => n.startsWith("dirtybit")), []);
    assert.deepEqual(await qmp.execute("query-block-jobs"), []);
    for (const node of nodes) {
      const state = await loadDiskState(stateDir, node);
      const bitmaps = named.find((n) => n["node-name"] === node)?.["dirty-bitmaps"] ?? [];
      assert.deepEqual(
        bitmaps.map((b) => b.name).sort(),
        [state!.checkpoint.baseBitmap, state!.checkpoint.incBitmap].sort(),
        `bitmaps of ${node}`,
      );
    }
  } finally {
    await qmp.close();
  }
  assert.equal(await Deno.readTextFile(join(stateDir, ".lock")), "", "the lock was released");
}

Deno.test("full + incrementals: each point restores equal; only written blocks; L2 and L3", async () => {
  await withQsd({
    disks: [{
      size: 64 * MiB,
      writes: [
        { pattern: 0xa1, offset: 0, length: 8 * MiB },
        { pattern: 0xa2, offset: 20 * MiB, length: 4 * MiB },
      ],
    }],
  }, async ({ qsd, at }) => {
    const state = at("state");
    const [full] = await backup(qsd, state, at("s0.dbit"));
    assert.equal(full.level, "full");
    assert.equal(full.parentId, null);
    assert.match(full.fallback ?? "", /no previous/);
    assert.equal(full.stats.dataBytes, 12 * MiB, "a full stores the allocated data");
    await qsd.snapshotImage(0, at("p0.raw"));

    // Unaligned writes into written and never written blocks.
    await qsd.guestWrite(0, 0xb1, MiB + 512, 200 * KiB);
    await qsd.guestWrite(0, 0xb2, 40 * MiB + 4 * KiB, 8 * KiB);
    const written1 = blockAligned(MiB + 512, 200 * KiB) + BLOCK;
    const [inc1] = await backup(qsd, state, at("s1.dbit"));
    assert.equal(inc1.level, "incremental");
    assert.equal(inc1.fallback, undefined);
    assert.equal(inc1.parentId, full.backupId);
    assert.deepEqual(inc1.stats, {
      dirtyBytes: written1,
      unchangedBytes: 0,
      zeroBytes: 0,
      dataBytes: written1,
    });
    const s1 = await inspect(at("s1.dbit"));
    assert.equal(s1.header.parentId, full.backupId);
    assert.equal(s1.trailer.dataBytes, written1);
    assert.equal(s1.trailer.zeroBytes, 0);
    await qsd.snapshotImage(0, at("p1.raw"));

    // The same bytes again (L2), write-zeroes over data (L3), and 128 KiB of new data.
    await qsd.guestWrite(0, 0xa2, 20 * MiB, MiB);
    await qsd.guestWriteZeroes(0, 2 * MiB, 512 * KiB);
    await qsd.guestWrite(0, 0xb3, 48 * MiB, 128 * KiB);
    const [inc2] = await backup(qsd, state, at("s2.dbit"));
    assert.equal(inc2.parentId, inc1.backupId);
    assert.deepEqual(inc2.stats, {
      dirtyBytes: MiB + 512 * KiB + 128 * KiB,
      unchangedBytes: MiB,
      zeroBytes: 512 * KiB,
      dataBytes: 128 * KiB,
    });
    const s2 = await inspect(at("s2.dbit"));
    assert.equal(s2.trailer.dataBytes, 128 * KiB);
    assert.equal(s2.trailer.zeroBytes, 512 * KiB);
    await qsd.snapshotImage(0, at("p2.raw"));
    await assertNoLeftovers(qsd, state);

    // One stream per run into one qcow2 target (the bpipe way): each point in time.
    for (const i of [0, 1, 2]) {
      await dirtybitOk(["restore", "--out", at("t.qcow2"), at(`s${i}.dbit`)]);
      await assertSameImage(at("t.qcow2"), at(`p${i}.raw`));
    }
    // The whole chain in one run into a raw file.
    await dirtybitOk([
      "restore",
      "--out",
      at("t.raw"),
      at("s0.dbit"),
      at("s1.dbit"),
      at("s2.dbit"),
    ]);
    await assertSameImage(at("t.raw"), at("p2.raw"));
  });
});

Deno.test("multi-disk: one point in time for both disks while the guest writes during the backup", async () => {
  const size = 32 * MiB;
  const nodes = ["disk0", "disk1"];
  await withQsd({
    disks: [
      { size, writes: [{ pattern: 0x01, offset: 0, length: 4 * MiB }] },
      { size, writes: [{ pattern: 0x02, offset: 8 * MiB, length: 4 * MiB }] },
    ],
  }, async ({ qsd, at }) => {
    const state = at("state");
    await Deno.mkdir(at("full"));
    const fulls = await backup(qsd, state, at("full"), [], nodes);
    assert.deepEqual(fulls.map((r) => [r.node, r.level]), [["disk0", "full"], ["disk1", "full"]]);
    assert.equal(fulls[0].backupId, fulls[1].backupId, "one backup id for the job");

    for (const d of [0, 1]) {
      await qsd.guestWrite(d, 0x10 + d, 2 * MiB, 3 * MiB);
      await qsd.snapshotImage(d, at(`p1-${d}.raw`));
    }
    // Writes after the point in time, once the streams have started: they go to
    // regions being backed up and elsewhere, and must wait for the next incremental.
    const writesDuring = async () => {
      for (const d of [0, 1]) {
        await qsd.guestWrite(d, 0x20 + d, 3 * MiB, 256 * KiB);
        await qsd.guestWrite(d, 0x30 + d, 20 * MiB, 64 * KiB);
      }
    };
    let during: Promise<void> | undefined;
    const inc1 = await runBackup({
      qmp: qsd.qmpSocket,
      nbdSocket: qsd.nbdSocket,
      nodes,
      level: "auto",
      stateDir: state,
      compression: "zstd:1",
    }, (disk) =>
      Promise.resolve(
        passThroughSink(fileSink(at(`inc1-${disk.node}.dbit`), () => during ??= writesDuring())),
      ));
    assert.ok(during, "the sink saw the stream's records");
    assert.deepEqual(inc1.map((r) => r.level), ["incremental", "incremental"]);
    for (const [d, r] of inc1.entries()) {
      assert.equal(r.stats.dirtyBytes, 3 * MiB);
      await dirtybitOk([
        "restore",
        "--out",
        at(`t${d}.raw`),
        fulls[d].file,
        at(`inc1-${r.node}.dbit`),
      ]);
      await assertSameImage(at(`t${d}.raw`), at(`p1-${d}.raw`));
      await qsd.snapshotImage(d, at(`p2-${d}.raw`));
    }

    await Deno.mkdir(at("inc2"));
    const inc2 = await backup(qsd, state, at("inc2"), [], nodes);
    for (const [d, r] of inc2.entries()) {
      assert.equal(r.level, "incremental");
      assert.equal(r.parentId, inc1[d].backupId);
      assert.equal(r.stats.dirtyBytes, 256 * KiB + 64 * KiB, "the writes made during inc1");
      await dirtybitOk(["restore", "--out", at(`t${d}.raw`), r.file]);
      await assertSameImage(at(`t${d}.raw`), at(`p2-${d}.raw`));
    }
    await assertNoLeftovers(qsd, state, nodes);
  });
});

/** A file sink that runs `beforeRecords` before passing on the first record (after the header). */
function fileSink(path: string, beforeRecords: () => Promise<void>): WritableStream<Uint8Array> {
  const file = Deno.openSync(path, { write: true, create: true, truncate: true });
  const out = file.writable.getWriter();
  let writes = 0;
  return new WritableStream({
    async write(chunk) {
      if (++writes === 2) await beforeRecords();
      await out.write(chunk);
    },
    close: () => out.close(),
    abort: (reason) => out.abort(reason),
  });
}

/**
 * Starts `backup --out - --compress none` and reads its first MiB, then stops
 * reading: the backup is blocked mid-stream on the full pipe. `end` is how it
 * is stopped; resolves with its exit status and stderr.
 */
async function interruptedBackup(
  qsd: Qsd,
  stateDir: string,
  end: "SIGKILL" | "SIGTERM" | "closed pipe",
): Promise<{ status: Deno.CommandStatus; stderr: string; pid: number }> {
  const child = cliCommand([
    "backup",
    ...qsd.sourceArgs(),
    ...["--state-dir", stateDir, "--out", "-", "--compress", "none"],
  ], { stdin: "null" }).spawn();
  const stderr = new Response(child.stderr).text();
  const reader = child.stdout.getReader();
  try {
    for (let got = 0; got < MiB;) {
      const { value, done } = await reader.read();
      assert.ok(!done, "the backup ended before it was interrupted");
      got += value.length;
    }
    if (end === "closed pipe") await reader.cancel();
    else child.kill(end);
    return { status: await child.status, stderr: await stderr, pid: child.pid };
  } finally {
    await reader.cancel();
  }
}

Deno.test("killed, cancelled, broken pipe: the next incremental is complete, nothing left", async () => {
  await withQsd({ disks: [{ size: 64 * MiB }] }, async ({ qsd, at }) => {
    const state = at("state");
    const [full] = await backup(qsd, state, at("s0.dbit"));
    for (let i = 0; i < 6; i++) await qsd.guestWrite(0, 0x40 + i, i * 8 * MiB, 8 * MiB);
    await qsd.snapshotImage(0, at("p1.raw"));

    // SIGTERM (Bacula cancelling) must end the job even while its output pipe is full.
    const cancelled = await interruptedBackup(qsd, state, "SIGTERM");
    assert.equal(cancelled.status.code, 8, cancelled.stderr);
    assert.match(cancelled.stderr, /^dirtybit: backup cancelled by a signal; the changes stay/m);
    await assertNoLeftovers(qsd, state);
    // The reader went away (Bacula's storage daemon died): a write error, not a hang.
    const broken = await interruptedBackup(qsd, state, "closed pipe");
    assert.equal(broken.status.code, 6, broken.stderr);
    assert.match(broken.stderr, /^dirtybit: cannot write the backup stream/m);
    await assertNoLeftovers(qsd, state);

    // A SIGKILL cleans nothing: the next job takes the lock over and removes the rest.
    const killed = await interruptedBackup(qsd, state, "SIGKILL");
    assert.equal(killed.status.signal, "SIGKILL");
    assert.equal((await Deno.readTextFile(join(state, ".lock"))).trim(), String(killed.pid));
    const qmp = await qsd.qmp();
    const exports = await qmp.execute<{ id: string }[]>("query-block-exports");
    assert.ok(exports.some((e) => e.id.startsWith("dirtybit-")), "the kill left its export");
    const lock = (await queryBlockNodes(qmp)).get("disk0")!.bitmaps.map((b) => parseHolder(b.name));
    assert.equal(lock.find((h) => h)?.pid, killed.pid, "and its disk lock in QEMU");
    await qmp.close();

    const { disks: [inc], stderr } = await backupWithWarnings(qsd, state, at("s1.dbit"));
    assert.match(stderr, /^dirtybit: warning: removed \d+ leftovers/m);
    assert.match(
      stderr,
      new RegExp(
        `^dirtybit: warning: removed the disk lock of dirtybit pid ${killed.pid} on host .*, which died$`,
        "m",
      ),
    );
    assert.equal(inc.level, "incremental");
    assert.equal(inc.parentId, full.backupId);
    assert.equal(inc.stats.dirtyBytes, 48 * MiB);
    await assertNoLeftovers(qsd, state);
    await dirtybitOk(["restore", "--out", at("t.raw"), at("s0.dbit"), at("s1.dbit")]);
    await assertSameImage(at("t.raw"), at("p1.raw"));
  });
});

Deno.test("a lost bitmap gives a full with the reason (inconsistent after a crash, removed)", async () => {
  await withQsd({
    disks: [{ size: 32 * MiB, writes: [{ pattern: 0x51, offset: 0, length: MiB }] }],
  }, async ({ qsd, at }) => {
    const state = at("state");
    await backup(qsd, state, at("s0.dbit"));
    // A clean quit stores the bitmap in the image; the daemon that reopens it
    // flags it in use, and dying then leaves it inconsistent.
    await qsd.restart();
    await qsd.kill();
    await qsd.restart();
    const { disks: [afterCrash], stderr } = await backupWithWarnings(qsd, state, at("s1.dbit"));
    assert.equal(afterCrash.level, "full");
    assert.match(afterCrash.fallback!, /inconsistent/);
    assert.ok(
      stderr.includes(`dirtybit: warning: disk0: full backup: ${afterCrash.fallback}`),
      `the reason is printed without a terminal: ${stderr}`,
    );

    const { checkpoint } = (await loadDiskState(state, "disk0"))!;
    const qmp = await qsd.qmp();
    await qmp.execute("block-dirty-bitmap-remove", { node: "disk0", name: checkpoint.incBitmap });
    await qmp.close();
    const [afterRemoval] = await backup(qsd, state, at("s2.dbit"));
    assert.equal(afterRemoval.level, "full");
    assert.match(afterRemoval.fallback!, /does not exist/);

    await qsd.guestWrite(0, 0x52, 4 * MiB, MiB);
    await qsd.snapshotImage(0, at("p3.raw"));
    const [inc] = await backup(qsd, state, at("s3.dbit"));
    assert.equal(inc.level, "incremental");
    assert.equal(inc.parentId, afterRemoval.backupId);
    assert.equal(inc.stats.dirtyBytes, MiB);
    await dirtybitOk(["restore", "--out", at("t.qcow2"), at("s2.dbit"), at("s3.dbit")]);
    await assertSameImage(at("t.qcow2"), at("p3.raw"));
    await assertNoLeftovers(qsd, state);
  });
});

Deno.test("a disk size that is not a multiple of the block size, written in its last block", async () => {
  const size = 32 * MiB + 7680;
  const lastBlock = Math.floor(size / BLOCK) * BLOCK;
  await withQsd({
    disks: [{ size, writes: [{ pattern: 0x61, offset: lastBlock, length: 7680 }] }],
  }, async ({ qsd, at }) => {
    const state = at("state");
    const [full] = await backup(qsd, state, at("s0.dbit"));
    assert.equal(full.stats.dataBytes, 7680);
    await qsd.snapshotImage(0, at("p0.raw"));
    await qsd.guestWrite(0, 0x62, size - 1024, 1024);
    await qsd.guestWrite(0, 0x63, MiB, 4 * KiB);
    const [inc] = await backup(qsd, state, at("s1.dbit"));
    assert.equal(inc.stats.dirtyBytes, blockAligned(size - 1024, 1024, size) + BLOCK);
    assert.equal(blockAligned(size - 1024, 1024, size), 7680);
    await qsd.snapshotImage(0, at("p1.raw"));
    assert.equal((await inspect(at("s1.dbit"))).header.virtualSize, size);
    await dirtybitOk(["restore", "--out", at("t.raw"), at("s0.dbit")]);
    await assertSameImage(at("t.raw"), at("p0.raw"));
    await dirtybitOk(["restore", "--out", at("t.raw"), at("s1.dbit")]);
    await assertSameImage(at("t.raw"), at("p1.raw"));
    await dirtybitOk(["restore", "--out", at("t.qcow2"), at("s0.dbit"), at("s1.dbit")]);
    await assertSameImage(at("t.qcow2"), at("p1.raw"));
  });
});

/** Grows disk 0 of `qsd` (its guest export is taken down meanwhile: it blocks resizing). */
async function resizeDisk0(qsd: Qsd, size: number): Promise<void> {
  const qmp = await qsd.qmp();
  try {
    await qmp.execute("block-export-del", { id: "vm" });
    while ((await qmp.execute<{ id: string }[]>("query-block-exports")).length > 0) {
      await delay(20);
    }
    await qmp.execute("block_resize", { "node-name": "disk0", size });
    await qmp.execute("block-export-add", {
      type: "nbd",
      id: "vm",
      "node-name": "disk0",
      name: "vm",
      writable: true,
    });
  } finally {
    await qmp.close();
  }
}

Deno.test("a resized disk gets a full with the reason, not an incremental no restore accepts", async () => {
  await withQsd({
    disks: [{ size: 32 * MiB, writes: [{ pattern: 0x91, offset: 0, length: MiB }] }],
  }, async ({ qsd, at }) => {
    const state = at("state");
    await backup(qsd, state, at("s0.dbit"));
    await resizeDisk0(qsd, 40 * MiB);
    await qsd.guestWrite(0, 0x92, 36 * MiB, MiB);
    const [grown] = await backup(qsd, state, at("s1.dbit"));
    assert.equal(grown.level, "full");
    assert.match(grown.fallback!, /resized from 33554432 to 41943040 bytes/);
    await qsd.guestWrite(0, 0x93, 2 * MiB, MiB);
    await qsd.snapshotImage(0, at("p2.raw"));
    const [inc] = await backup(qsd, state, at("s2.dbit"));
    assert.equal(inc.parentId, grown.backupId);
    assert.equal(inc.stats.dirtyBytes, MiB);
    await dirtybitOk(["restore", "--out", at("t.raw"), at("s1.dbit"), at("s2.dbit")]);
    await assertSameImage(at("t.raw"), at("p2.raw"));
  });
});

Deno.test("the state directory lock: one of many jobs starting together gets it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-test-" });
  try {
    for (let round = 0; round < 10; round++) {
      const tries = await Promise.allSettled(Array.from({ length: 6 }, () => lockStateDir(dir)));
      const held = tries.flatMap((t) => t.status === "fulfilled" ? [t.value] : []);
      assert.equal(held.length, 1, `round ${round}: ${held.length} jobs got the lock`);
      for (const t of tries) {
        if (t.status === "rejected") assert.match(t.reason.message, /another dirtybit job/);
      }
      assert.equal(await Deno.readTextFile(join(dir, ".lock")), `${Deno.pid}\n`);
      await held[0].release();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
