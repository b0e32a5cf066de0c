/**
 * A chain is never broken silently: the disk, not the state directory, owns
 * the checkpoint bitmaps. Against a real qemu-storage-daemon, `dirtybit
 * backup` (and `replicate seed`) as child processes: a second state directory
 * is refused naming the owning chain, `--take-over` starts a new chain that
 * restores equal (`qemu-img compare`), two jobs on one disk at once give one
 * "busy" (a lock left by a `kill -9` is removed by the next plain run:
 * tests/backup_test.ts), a full taken instead of an incremental says why,
 * on stderr and in `--json`, and backup and replication of one disk keep
 * each other's bitmaps. Replication's bitmaps carry the owner too: a seed
 * from a second state directory is refused the same way, `--take-over`
 * takes the disk over, and bitmaps of an older version without an owner
 * are adopted by the state directory whose state names them.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type Qsd, withQsd } from "./fixtures/qsd.ts";
import {
  assertOneLineError,
  assertSameImage,
  backupCli,
  dirtybit,
  dirtybitOk,
} from "./fixtures/cli.ts";
import { runBackup } from "../lib/backup/engine.ts";
import { queryBlockNodes } from "../lib/qemu/blocknodes.ts";
import { parseHolder } from "../lib/qemu/disk_lock.ts";
import { cli, ReceiverProcess, Sites } from "./replication/sites.ts";
import { replicationScope } from "../lib/replication/attempt.ts";
import { passThroughSink } from "../lib/sinks/sink.ts";

const MiB = 1 << 20;

/** `dirtybit backup --json` of disk0 through QMP monitor `monitor`. */
function backup(qsd: Qsd, stateDir: string, out: string, extra: string[] = [], monitor = 0) {
  return backupCli(qsd.sourceArgs(["disk0"], monitor), stateDir, out, extra);
}

async function backupOk(qsd: Qsd, stateDir: string, out: string, extra: string[] = []) {
  const r = await backup(qsd, stateDir, out, extra);
  assert.equal(r.code, 0, `backup exited ${r.code}: ${r.stderr}`);
  return { disk: r.disks[0], stderr: r.stderr };
}

/** Bitmaps of disk0, through the last QMP monitor (a job may hold the first). */
async function bitmapsOf(qsd: Qsd): Promise<string[]> {
  const qmp = await qsd.qmp(qsd.qmpSockets.length - 1);
  try {
    return (await queryBlockNodes(qmp)).get("disk0")!.bitmaps.map((b) => b.name).sort();
  } finally {
    await qmp.close();
  }
}

function count(text: string, part: string): number {
  return text.split(part).length - 1;
}

async function ownerOf(stateDir: string): Promise<string> {
  return (await Deno.readTextFile(join(stateDir, "owner-id"))).trim();
}

Deno.test("a second state directory is refused naming the owner; --take-over starts a chain that restores equal", async () => {
  await withQsd({
    disks: [{ size: 32 * MiB, writes: [{ pattern: 0x21, offset: 0, length: 2 * MiB }] }],
  }, async ({ qsd, at }) => {
    const [a, b] = [at("a"), at("b")];
    const { disk: fullA } = await backupOk(qsd, a, at("a0.dbit"));
    const ownerA = await ownerOf(a);
    const before = await bitmapsOf(qsd);
    assert.ok(before.every((n) => n.endsWith(`@${ownerA}`)), `bitmaps carry the owner: ${before}`);

    const refused = await backup(qsd, b, at("b0.dbit"));
    assertOneLineError(
      refused,
      4,
      `node disk0 belongs to the chain of owner ${ownerA} (another state directory): ` +
        "pass --take-over",
    );
    assert.deepEqual(await bitmapsOf(qsd), before, "the refused run touched no bitmap");
    assert.ok(!(await Deno.stat(at("b0.dbit")).catch(() => null)), "and wrote no stream");

    const { disk: taken, stderr } = await backupOk(qsd, b, at("b0.dbit"), [
      "--take-over",
      "--level",
      "incremental",
    ]);
    assert.equal(taken.level, "full");
    assert.match(
      taken.fallback!,
      new RegExp(`taking node disk0 over from the chain of owner ${ownerA}`),
    );
    assert.equal(count(stderr, `dirtybit: warning: disk0: full backup: ${taken.fallback}`), 1);
    const ownerB = await ownerOf(b);
    assert.ok(
      (await bitmapsOf(qsd)).every((n) => n.endsWith(`@${ownerB}`)),
      "A's bitmaps are gone",
    );

    await qsd.guestWrite(0, 0x22, 4 * MiB, MiB);
    await qsd.snapshotImage(0, at("p1.raw"));
    const { disk: inc } = await backupOk(qsd, b, at("b1.dbit"));
    assert.equal(inc.level, "incremental");
    assert.equal(inc.parentId, taken.backupId);
    assert.equal(inc.stats.dirtyBytes, MiB);
    await dirtybitOk(["restore", "--out", at("t.qcow2"), at("b0.dbit"), at("b1.dbit")]);
    await assertSameImage(at("t.qcow2"), at("p1.raw"));

    // The first state directory now learns what happened to its checkpoint.
    const back = await backup(qsd, a, at("a1.dbit"));
    assertOneLineError(
      back,
      4,
      `the checkpoint of node disk0 was taken over by the chain of owner ${ownerB}`,
    );
    assert.notEqual(fullA.backupId, taken.backupId);
  });
});

Deno.test("two jobs on one disk at once, whatever their state directory: the second is busy", async () => {
  await withQsd({
    disks: [{ size: 16 * MiB, writes: [{ pattern: 0x31, offset: 0, length: MiB }] }],
    monitors: 2,
  }, async ({ qsd, at }) => {
    await Deno.writeTextFile(at("psk"), "correct horse battery staple 0123456789\n", {
      mode: 0o600,
    });
    let entered!: () => void;
    const inSink = new Promise<void>((r) => entered = r);
    let open!: () => void;
    const gate = new Promise<void>((r) => open = r);
    const chunks: Uint8Array[] = [];
    // A real backup run (in this process) that waits inside its stream.
    const first = runBackup({
      qmp: qsd.qmpSockets[0],
      nbdSocket: qsd.nbdSocket,
      nodes: ["disk0"],
      level: "auto",
      stateDir: at("a"),
      compression: "none",
    }, () =>
      Promise.resolve(
        passThroughSink(
          new WritableStream({
            async write(chunk) {
              entered();
              await gate;
              chunks.push(chunk.slice());
            },
          }),
        ),
      ));
    try {
      await inSink;
      const holder = (await bitmapsOf(qsd)).map(parseHolder).find((h) => h);
      assert.equal(holder?.pid, Deno.pid, "the running job holds the disk's lock in QEMU");

      const other = await backup(qsd, at("b"), at("b.dbit"), [], 1);
      assertOneLineError(
        other,
        2,
        `disk node disk0 is busy: dirtybit pid ${Deno.pid} on host ${holder!.host}`,
      );
      // Same state directory: busy too (its own lock).
      const same = await backup(qsd, at("a"), at("a2.dbit"), [], 1);
      assertOneLineError(same, 2, "another dirtybit job");
      // Replication of the same disk waits for the backup the same way.
      const seed = await dirtybit([
        "replicate",
        "seed",
        ...qsd.sourceArgs(["disk0"], 1),
        "--dr",
        "127.0.0.1:9",
        "--psk-file",
        at("psk"),
        "--name",
        "vda",
        "--state-dir",
        at("r"),
        "--retry-count",
        "0",
      ]);
      assertOneLineError(seed, 2, "disk node disk0 is busy");
    } finally {
      open();
    }
    const [done] = await first;
    assert.equal(done.level, "full");
    assert.deepEqual((await bitmapsOf(qsd)).filter((n) => n.startsWith("dirtybit-lock")), []);
    // Once it ended, the other state directory meets the owner, not a lock.
    assertOneLineError(await backup(qsd, at("b"), at("b.dbit")), 4, "pass --take-over");
  });
});

Deno.test("a missing checkpoint names what happened; the fallback is on stderr once and in --json", async () => {
  await withQsd({
    disks: [{ size: 16 * MiB, writes: [{ pattern: 0x41, offset: 0, length: MiB }] }],
  }, async ({ qsd, at }) => {
    const state = at("state");
    const incremental = ["--level", "incremental"];
    const first = await backupOk(qsd, state, at("s0.dbit"), incremental);
    assert.equal(first.disk.level, "full");
    assert.match(first.disk.fallback!, /no previous checkpoint for node disk0/);

    // QEMU dies before it stored the new bitmaps in the image: it comes back without any.
    await qsd.kill();
    await qsd.restart();
    const restarted = await backupOk(qsd, state, at("s1.dbit"), incremental);
    assert.equal(restarted.disk.level, "full");
    assert.match(restarted.disk.fallback!, /no dirtybit bitmap is left, so QEMU was restarted/);
    const line = `dirtybit: warning: disk0: full backup: ${restarted.disk.fallback}`;
    assert.equal(count(restarted.stderr, line), 1, restarted.stderr);

    // Someone removed the checkpoint's bitmap, and left the rest.
    const inc = (await bitmapsOf(qsd)).find((n) => n.startsWith("dirtybit-inc-"))!;
    const qmp = await qsd.qmp();
    await qmp.execute("block-dirty-bitmap-remove", { node: "disk0", name: inc });
    await qmp.close();
    const removed = await backupOk(qsd, state, at("s2.dbit"), incremental);
    assert.match(
      removed.disk.fallback!,
      new RegExp(`bitmap ${inc} does not exist on node disk0: it was removed`),
    );

    const healthy = await backupOk(qsd, state, at("s3.dbit"), incremental);
    assert.equal(healthy.disk.level, "incremental");
    assert.equal(healthy.disk.fallback, undefined);
    assert.doesNotMatch(healthy.stderr, /full backup/);
  });
});

Deno.test("--out DIR: an incremental whose parent stream is gone from DIR warns and takes a full", async () => {
  await withQsd({
    disks: [{ size: 16 * MiB, writes: [{ pattern: 0x51, offset: 0, length: MiB }] }],
  }, async ({ qsd, at }) => {
    const state = at("state");
    const [dir, elsewhere] = [at("dir"), at("elsewhere")];
    await Deno.mkdir(dir);
    await Deno.mkdir(elsewhere);
    const { disk: full } = await backupOk(qsd, state, dir);
    await qsd.guestWrite(0, 0x52, 2 * MiB, MiB);
    const { disk: inc1 } = await backupOk(qsd, state, dir);
    assert.equal(inc1.level, "incremental");

    await Deno.remove(inc1.file);
    await qsd.guestWrite(0, 0x53, 4 * MiB, MiB);
    await qsd.snapshotImage(0, at("p.raw"));
    const { disk: again, stderr } = await backupOk(qsd, state, dir, ["--level", "incremental"]);
    assert.equal(again.level, "full");
    assert.match(again.fallback!, /the stream of its parent backup .* is no longer in /);
    assert.equal(count(stderr, `dirtybit: warning: disk0: full backup: ${again.fallback}`), 1);
    await dirtybitOk(["restore", "--out", at("t.raw"), again.file]);
    await assertSameImage(at("t.raw"), at("p.raw"));
    assert.notEqual(again.backupId, full.backupId);

    // Streams kept in another directory than their parent's are not a broken chain.
    await qsd.guestWrite(0, 0x54, 6 * MiB, MiB);
    const { disk: inc2 } = await backupOk(qsd, state, elsewhere);
    assert.equal(inc2.level, "incremental");
    assert.equal(inc2.parentId, again.backupId);
  });
});

Deno.test("backup and replication of one disk keep each other's bitmaps", async () => {
  const sites = await Sites.start(16 * MiB);
  const receiver = await ReceiverProcess.start(sites.receiverArgs());
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-test-" });
  const at = (name: string) => join(dir, name);
  try {
    const qsd = sites.qsd;
    const seeded = await sites.send("seed", receiver.port);
    assert.equal(seeded.code, 0, seeded.stderr);
    const { disk: full } = await backupOk(qsd, at("b"), at("s0.dbit"));
    await qsd.guestWrite(0, 0x61, 4 * MiB, MiB);
    const pushed = await sites.send("push", receiver.port, ["--once"]);
    assert.equal(pushed.code, 0, pushed.stderr);
    assert.match(pushed.stderr, /cycle 1 confirmed: 1048576 bytes dirty/);

    await qsd.guestWrite(0, 0x62, 8 * MiB, MiB);
    await qsd.snapshotImage(0, at("p1.raw"));
    const { disk: inc } = await backupOk(qsd, at("b"), at("s1.dbit"));
    assert.equal(inc.level, "incremental", "replication left the backup's bitmaps alone");
    assert.equal(inc.stats.dirtyBytes, 2 * MiB);
    const again = await sites.send("push", receiver.port, ["--once"]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /cycle 2 confirmed: 1048576 bytes dirty/, "and the other way round");
    assert.ok(await sites.replicaEquals(await sites.snapshot("now")));
    await dirtybitOk(["restore", "--out", at("t.qcow2"), full.file, inc.file]);
    await assertSameImage(at("t.qcow2"), at("p1.raw"));
  } finally {
    await receiver.stop();
    await sites.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("replication: a second state directory is refused naming the owner; --take-over takes the disk", async () => {
  const sites = await Sites.start(16 * MiB);
  const receiver = await ReceiverProcess.start(sites.receiverArgs());
  try {
    const qsd = sites.qsd;
    const [a, b] = [sites.stateDir, join(sites.dir, "b")];
    // The same disk from state directory b, as replica vdb.
    const fromB = (sub: "seed" | "push", extra: string[] = []) =>
      cli([
        ...sites.senderArgs(sub, receiver.port).map((arg) =>
          arg === a ? b : arg === "vda" ? "vdb" : arg
        ),
        "--retry-count",
        "0",
        ...extra,
      ]);
    const seeded = await sites.send("seed", receiver.port);
    assert.equal(seeded.code, 0, seeded.stderr);
    const ownerA = await ownerOf(a);
    const before = await bitmapsOf(qsd);
    assert.ok(
      before.length > 0 && before.every((n) => n.endsWith(`@${ownerA}`)),
      `bitmaps carry the owner: ${before}`,
    );

    const refused = await fromB("seed");
    assertOneLineError(
      refused,
      4,
      `node disk0 belongs to the chain of owner ${ownerA} (another state directory): ` +
        "pass --take-over",
    );
    assert.deepEqual(await bitmapsOf(qsd), before, "the refused seed touched no bitmap");
    await qsd.guestWrite(0, 0x71, 2 * MiB, MiB);
    const pushed = await sites.send("push", receiver.port, ["--once"]);
    assert.equal(pushed.code, 0, pushed.stderr);
    assert.match(pushed.stderr, /cycle 1 confirmed: 1048576 bytes dirty/, "A's chain is whole");
    assert.doesNotMatch(pushed.stderr, /full:/);

    const taken = await fromB("seed", ["--take-over"]);
    assert.equal(taken.code, 0, taken.stderr);
    const ownerB = await ownerOf(b);
    const now = await bitmapsOf(qsd);
    assert.ok(now.every((n) => n.endsWith(`@${ownerB}`)), `A's bitmaps are gone: ${now}`);
    const back = await sites.send("push", receiver.port, ["--once"]);
    assertOneLineError(
      back,
      4,
      `the checkpoint of node disk0 was taken over by the chain of owner ${ownerB}`,
    );
    assert.deepEqual(await bitmapsOf(qsd), now, "the refused push touched no bitmap");
    await qsd.guestWrite(0, 0x72, 4 * MiB, MiB);
    const pushedB = await fromB("push", ["--once"]);
    assert.equal(pushedB.code, 0, pushedB.stderr);
    assert.match(pushedB.stderr, /cycle 1 confirmed: 1048576 bytes dirty/);
  } finally {
    await receiver.stop();
    await sites.stop();
  }
});

Deno.test("replication: bitmaps without an owner (an older version) are adopted by the state that names them", async () => {
  const sites = await Sites.start(16 * MiB);
  const receiver = await ReceiverProcess.start(sites.receiverArgs());
  try {
    const qsd = sites.qsd;
    const seeded = await sites.send("seed", receiver.port);
    assert.equal(seeded.code, 0, seeded.stderr);
    // What an older version left: the same checkpoint under names without an owner id.
    const statePath = join(sites.stateDir, "vda.replication.json");
    const state = JSON.parse(await Deno.readTextFile(statePath));
    const scope = await replicationScope("disk0");
    const old = { inc: `dirtybit-${scope}-inc-old1`, base: `dirtybit-${scope}-base-old1` };
    const qmp = await qsd.qmp();
    try {
      await qmp.execute("transaction", {
        actions: [
          ...[old.inc, old.base].map((name) => ({
            type: "block-dirty-bitmap-add",
            data: { node: "disk0", name, persistent: true },
          })),
          ...[state.checkpoint.incBitmap, state.checkpoint.baseBitmap].map((name: string) => ({
            type: "block-dirty-bitmap-remove",
            data: { node: "disk0", name },
          })),
        ],
      });
    } finally {
      await qmp.close();
    }
    state.checkpoint = { node: "disk0", incBitmap: old.inc, baseBitmap: old.base };
    await Deno.writeTextFile(statePath, JSON.stringify(state));

    await qsd.guestWrite(0, 0x81, 2 * MiB, MiB);
    const pushed = await sites.send("push", receiver.port, ["--once"]);
    assert.equal(pushed.code, 0, pushed.stderr);
    assert.match(pushed.stderr, /cycle 1 confirmed: 1048576 bytes dirty/);
    assert.doesNotMatch(pushed.stderr, /full:/);
    // The new checkpoint carries the owner; the seed's base stays the base, under its old name.
    const owner = await ownerOf(sites.stateDir);
    const cp = JSON.parse(await Deno.readTextFile(statePath)).checkpoint;
    assert.ok(cp.incBitmap.endsWith(`@${owner}`), cp.incBitmap);
    assert.equal(cp.baseBitmap, old.base);
    assert.deepEqual(await bitmapsOf(qsd), [cp.baseBitmap, cp.incBitmap].sort());
    assert.ok(await sites.replicaEquals(await sites.snapshot("now")));
  } finally {
    await receiver.stop();
    await sites.stop();
  }
});
