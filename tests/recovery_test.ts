/**
 * After a kill, the next plain run works by itself. `dirtybit` runs as a
 * child process against a real qemu-storage-daemon that runs no NBD server of
 * its own (so dirtybit starts QEMU's), and is SIGKILLed at points seen from
 * outside: once its run record names the NBD server, and mid-stream. The next
 * run without any extra flag must succeed, remove what the killed run left
 * (QEMU's NBD server, `.partial` streams, scratch directories), and the chain
 * must restore equal (`qemu-img compare`). A server someone else started is
 * still refused. Restore: kill -9 leaves no qemu-nbd, SIGTERM exits 8.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type Qsd, withQsd } from "./fixtures/qsd.ts";
import { assertSameImage, cliCommand, dirtybit, dirtybitJson, dirtybitOk } from "./fixtures/cli.ts";
import { fillRandom } from "./fixtures/bytes.ts";
import {
  exists,
  killWhen,
  nbdServerRuns,
  qemuNbdServing,
  recordedPaths,
  runRecordItems,
  waitFor,
  writePrefix,
} from "./fixtures/kills.ts";
import { cli, ReceiverProcess, Sites } from "./replication/sites.ts";
import type { DiskBackupResult } from "../lib/backup/plan.ts";
import { RunRecord } from "../lib/core/run_record.ts";
import { startNbdServer } from "../lib/qemu/nbd_server.ts";

const MiB = 1 << 20;
const DISK = 96 * MiB;

/** The guest writes `mib` MiB of random data from `offsetMib`. */
async function randomWrite(qsd: Qsd, offsetMib: number, mib: number): Promise<void> {
  for (let i = 0; i < mib; i += 8) {
    const len = Math.min(8, mib - i) * MiB;
    await qsd.guestPwrite(0, fillRandom(new Uint8Array(len)), (offsetMib + i) * MiB);
  }
}

async function withQmp<T>(qsd: Qsd, fn: (qmp: Awaited<ReturnType<Qsd["qmp"]>>) => Promise<T>) {
  const qmp = await qsd.qmp();
  try {
    return await fn(qmp);
  } finally {
    await qmp.close();
  }
}

async function files(dir: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
}

Deno.test("backup killed -9 after starting QEMU's NBD server and mid-stream: the next plain backup works", async () => {
  await withQsd({ disks: [{ size: DISK }], guestNbd: false }, async ({ qsd, at }) => {
    const state = at("state");
    const out = at("out");
    await Deno.mkdir(out);
    const args = ["backup", ...qsd.sourceArgs(), "--state-dir", state, "--out", out];
    const backup = () => dirtybitJson<(DiskBackupResult & { file: string })[]>(args);
    const spawnBackup = () =>
      cliCommand(args, {
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();

    await randomWrite(qsd, 0, 48);
    const [full] = await backup();
    const streams = [full.file];

    for (const point of ["server recorded", "mid-stream"] as const) {
      await randomWrite(qsd, point === "mid-stream" ? 40 : 8, 40);
      const expected = at(`${point}.raw`);
      await qsd.snapshotImage(0, expected);

      const killed = spawnBackup();
      const partial = async () => (await files(out)).some((f) => f.endsWith(".partial"));
      const recorded = async () =>
        (await runRecordItems(state)).some((i) => i.kind === "nbd-server");
      await killWhen(killed, point, point === "mid-stream" ? partial : recorded);
      const left = await recordedPaths(state);
      assert.ok(left.some((p) => p.includes("dirtybit-job-")), "the run recorded its job dir");
      if (point === "mid-stream") {
        assert.ok(await withQmp(qsd, nbdServerRuns), "the kill left QEMU's NBD server running");
        assert.ok(await partial(), "the kill left its .partial stream");
      }

      const [inc] = await backup();
      assert.equal(inc.level, "incremental", `after a kill ${point}`);
      streams.push(inc.file);
      assert.deepEqual((await files(out)).filter((f) => f.endsWith(".partial")), []);
      for (const path of left) assert.ok(!(await exists(path)), `${path} was removed`);
      assert.deepEqual(await files(join(state, ".runs")), [], "no run record left");
      assert.ok(!(await withQmp(qsd, nbdServerRuns)), "the backup stopped its NBD server");
      const restored = at(`${point}.qcow2`);
      await dirtybitOk(["restore", "--out", restored, ...streams]);
      await assertSameImage(restored, expected);
      await Deno.remove(restored);
    }

    // A server dirtybit did not start is refused as before.
    await withQmp(qsd, (qmp) =>
      qmp.execute("nbd-server-start", {
        addr: { type: "unix", data: { path: at("foreign.sock") } },
      }));
    const refused = await dirtybit(args);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /QEMU already runs an NBD server: pass its unix socket/);
    await withQmp(qsd, (qmp) => qmp.execute("nbd-server-stop"));
  });
});

Deno.test("replicate seed and push killed -9 (server started, mid-transfer): the next plain run works", async () => {
  const sites = await Sites.start(DISK, { guestNbd: false });
  const receiver = await ReceiverProcess.start(sites.receiverArgs());
  try {
    await randomWrite(sites.qsd, 0, 64);
    // Paced, so that "a moment into the transfer" is still inside it on a fast run
    // (an unpaced push of these 16 MiB ends in 0.3 s).
    const spawnSender = (sub: "seed" | "push") =>
      cliCommand([
        ...sites.senderArgs(sub, receiver.port),
        ...(sub === "push" ? ["--once"] : []),
        "--bandwidth-limit",
        "8MB",
      ], {
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
    for (const sub of ["seed", "push"] as const) {
      // Before the kills: what they leave keeps the fixture from serving the guest.
      const now = await sites.snapshot(sub);
      // Right after the server is recorded, and a moment into the transfer.
      for (const afterMs of [0, 300]) {
        const child = spawnSender(sub);
        const recorded = async () =>
          (await runRecordItems(sites.stateDir, child.pid)).some((i) => i.kind === "nbd-server");
        const said = new Response(child.stderr).text();
        await killWhen(child, `${sub}: server recorded`, recorded, afterMs, said);
      }
      // As a user would run it (default retries: the receiver may still see the killed sender).
      const r = await cli([
        ...sites.senderArgs(sub, receiver.port),
        ...(sub === "push" ? ["--once"] : []),
      ]);
      assert.equal(r.code, 0, `${sub} after kills: ${r.stderr}\nreceiver:\n${receiver.log}`);
      assert.ok(await sites.replicaEquals(now), `replica equals the source after ${sub}`);
      assert.deepEqual(await files(join(sites.stateDir, ".runs")), [], "no run record left");
      await randomWrite(sites.qsd, 8, 16);
    }
  } finally {
    await receiver.stop();
    await sites.stop();
  }
});

Deno.test("restore --out X.qcow2: kill -9 leaves no qemu-nbd, SIGTERM exits 8; the rerun restores equal", async () => {
  await withQsd({ disks: [{ size: DISK }], guestNbd: false }, async ({ qsd, at }) => {
    const state = at("state");
    await randomWrite(qsd, 0, 32);
    const expected = at("expected.raw");
    await qsd.snapshotImage(0, expected);
    const full = at("full.dbit");
    await dirtybitOk(["backup", ...qsd.sourceArgs(), "--state-dir", state, "--out", full]);
    await randomWrite(qsd, 16, 32);
    const expected2 = at("expected2.raw");
    await qsd.snapshotImage(0, expected2);
    const inc = at("inc.dbit");
    await dirtybitOk(["backup", ...qsd.sourceArgs(), "--state-dir", state, "--out", inc]);

    const target = at("t.qcow2");
    const served = async (path = target) => (await qemuNbdServing(path)).length > 0;
    // The stream comes on stdin and stops after 4 MiB: the restore waits inside it.
    const interrupted = async (stream: string, signal: "SIGKILL" | "SIGTERM") => {
      const child = cliCommand(["restore", "--out", target, "-"], { stdin: "piped" }).spawn();
      const stderr = new Response(child.stderr).text();
      const writer = await writePrefix(child, stream, 4 * MiB);
      await waitFor("qemu-nbd to serve the target", 60_000, () => served());
      child.kill(signal);
      const status = await child.status;
      await writer.close().catch(() => {});
      return { status, stderr: await stderr };
    };

    // kill -9 while the full is written: qemu-nbd dies with dirtybit.
    const killed = await interrupted(full, "SIGKILL");
    assert.equal(killed.status.signal, "SIGKILL");
    await waitFor("qemu-nbd to end with its owner", 5_000, async () => !(await served()));
    await dirtybitOk(["restore", "--out", target, full]);
    await assertSameImage(target, expected);

    // SIGTERM while the incremental is applied in place: exit 8, marked incomplete.
    const termed = await interrupted(inc, "SIGTERM");
    assert.equal(termed.status.code, 8, termed.stderr);
    assert.match(termed.stderr, /^dirtybit: restore cancelled by a signal; .* marked incomplete/m);
    assert.ok(!(await served()), "no qemu-nbd survives");
    const again = await dirtybit(["restore", "--out", target, inc]);
    assert.match(again.stderr, /left incomplete while applying backup/);

    // SIGTERM during a full: exit 8, the .partial is removed, the target stays as it was.
    const before = await Deno.readFile(target);
    const termedFull = await interrupted(full, "SIGTERM");
    assert.equal(termedFull.status.code, 8, termedFull.stderr);
    assert.match(termedFull.stderr, /\.partial was removed/);
    assert.ok(!(await exists(`${target}.partial`)));
    assert.ok(!(await served()), "no qemu-nbd survives");
    assert.deepEqual(await Deno.readFile(target), before);

    await dirtybitOk(["restore", "--out", target, full, inc]);
    await assertSameImage(target, expected2);
  });
});

Deno.test("a run killed after recording its NBD server but before tagging QEMU: the next starts its own", async () => {
  await withQsd({ disks: [{ size: MiB }], guestNbd: false }, async ({ qsd, at }) => {
    // What such a run leaves: its record, and no marker (the daemon has no /objects at all yet).
    const state = at("state");
    await Deno.mkdir(join(state, ".runs"), { recursive: true });
    const item = { kind: "nbd-server", qmp: qsd.qmpSocket, marker: "dirtybit-nbd-1-dead" };
    await Deno.writeTextFile(
      join(state, ".runs", "1-1-deadbeef.json"),
      JSON.stringify({ owner: { pid: 1, start: 1 }, items: [item] }),
    );
    const run = await RunRecord.begin(state);
    await withQmp(qsd, async (qmp) => {
      const server = await startNbdServer(qmp, {
        addr: { type: "unix", path: at("nbd.sock") },
        run,
        busy: "busy",
      });
      assert.ok(server.started);
      await server.stop();
    });
    await run.end();
    assert.deepEqual(await files(join(state, ".runs")), [], "the dead run's record was settled");
  });
});
