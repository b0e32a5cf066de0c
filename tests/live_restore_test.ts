/**
 * `dirtybit restore --live` into a fresh qcow2 node of a running
 * qemu-storage-daemon while another client reads through that node: every
 * read returns the backup's data (from the export or already copied), a
 * guest write made meanwhile is kept, the final image equals the chain with
 * that write, nothing of the restore is left in QEMU; a
 * SIGTERM and a kill -9 leave the image marked incomplete, and the next run
 * resumes it.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Qsd } from "./fixtures/qsd.ts";
import { run } from "./helpers.ts";
import {
  assertOneLineError,
  assertSameImage,
  cliCommand,
  dirtybit,
  dirtybitOk,
} from "./fixtures/cli.ts";
import { waitFor } from "./fixtures/kills.ts";
import { NbdClient } from "../lib/nbd/client.ts";
import { QmpSocket } from "../lib/qemu/qmp.ts";

const KiB = 1 << 10;
const MiB = 1 << 20;
const SIZE = 16 * MiB;

/** Reads random 64 KiB blocks of `uri` until `stop`, each compared with `expected`; the count. */
async function readWhile(uri: string, expected: Uint8Array, stop: Promise<unknown>) {
  const client = await NbdClient.connect({ uri });
  let done = false;
  stop.finally(() => done = true);
  let reads = 0;
  try {
    const buf = new Uint8Array(64 * KiB);
    while (!done) {
      const offset = Math.floor(Math.random() * (SIZE / buf.length)) * buf.length;
      await client.pread(buf, offset);
      const want = expected.subarray(offset, offset + buf.length);
      assert.ok(buf.every((b, i) => b === want[i]), `read at ${offset} differs from the backup`);
      reads++;
    }
  } finally {
    await client.close();
  }
  return reads;
}

/**
 * The node reads as the chain and has no backing, in QEMU and in its image's
 * header (the data itself is compared through QEMU: its metadata cache may
 * not be on disk yet).
 */
async function assertRestored(qsd: Qsd, raw: string): Promise<void> {
  const info = JSON.parse(
    await run("qemu-img", ["info", "-U", "--output=json", qsd.disks[0].image]),
  );
  assert.equal(info["backing-filename"], undefined, "the image names no backing file");
  const qmp = await qsd.qmp(1);
  try {
    const graph = await qmp.execute<{ edges: { name: string }[] }>("x-debug-query-block-graph");
    assert.ok(!graph.edges.some((e) => e.name === "backing"), "the node has no backing");
  } finally {
    await qmp.close();
  }
  await run("qemu-img", ["compare", "-f", "raw", "-F", "raw", qsd.disks[0].uri, raw]);
}

/** True once the restore's block job runs in `qsd` (the backing is attached then). */
async function jobRuns(qsd: Qsd): Promise<boolean> {
  const qmp = await qsd.qmp(1);
  try {
    const jobs = await qmp.execute<{ device: string }[]>("query-block-jobs");
    return jobs.some((j) => j.device.startsWith("dirtybit-live-"));
  } finally {
    await qmp.close();
  }
}

/** Waits for the job of the restore `out` is the output of; fails with its stderr if it ended. */
async function jobStarted(qsd: Qsd, out: Promise<Deno.CommandOutput>): Promise<void> {
  let ended: Deno.CommandOutput | undefined;
  out.then((o) => ended = o);
  await waitFor("the live restore's job", 30_000, async () => {
    if (ended) assert.fail(`the restore ended: ${new TextDecoder().decode(ended.stderr)}`);
    return await jobRuns(qsd);
  });
}

/** The names of the target's block nodes (no job or export node of ours may stay). */
async function nodeNames(qsd: Qsd): Promise<string[]> {
  const qmp = await qsd.qmp(1);
  try {
    const graph = await qmp.execute<{ nodes: { name: string }[] }>("x-debug-query-block-graph");
    return graph.nodes.map((n) => n.name).filter(Boolean).sort();
  } finally {
    await qmp.close();
  }
}

Deno.test("restore --live: reads and a write during the job, final image, SIGTERM, kill -9, resume", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "dirtybit-live-test-" });
  const at = (name: string) => join(tmp, name);
  const source = await Qsd.start({
    disks: [{
      size: SIZE,
      writes: [{ pattern: 0x41, offset: 0, length: 5 * MiB }, {
        pattern: 0x42,
        offset: 9 * MiB,
        length: 3 * MiB,
      }],
    }],
  });
  let target: Qsd | undefined;
  try {
    const backup = (out: string) =>
      dirtybitOk([
        "backup",
        ...source.sourceArgs(),
        ...["--state-dir", at("state"), "--out", at(out)],
      ]);
    await backup("s0.dbit");
    await source.guestWrite(0, 0x43, 2 * MiB, 1 * MiB);
    await source.guestWriteZeroes(0, 10 * MiB, 512 * KiB);
    await backup("s1.dbit");
    await source.snapshotImage(0, at("p1.raw"));
    const expected = await Deno.readFile(at("p1.raw"));
    const chain = [at("s0.dbit"), at("s1.dbit")];

    const live = (qsd: Qsd, rate: string) =>
      cliCommand([
        "restore",
        "--live",
        ...["--qmp", qsd.qmpSocket, "--node", "disk0", "--rate", rate, "--json"],
        ...chain,
      ]).spawn();
    const sidecarOf = (qsd: Qsd) => `${qsd.disks[0].image}.dbit.json`;
    const incomplete = async (qsd: Qsd) =>
      await Deno.readTextFile(sidecarOf(qsd)).then((t) => JSON.parse(t).applying, () => undefined);

    await t.step("reads through the node return the backup while the job runs", async () => {
      target = await Qsd.start({ disks: [{ size: SIZE }], monitors: 2 });
      const before = await nodeNames(target);
      const child = live(target, "4M");
      const out = child.output();
      await jobStarted(target, out);
      // A guest write during the job (4 KiB: its cluster's rest comes from the backup) is kept.
      const written = new Uint8Array(4 * KiB).fill(0xee);
      const guest = await NbdClient.connect({ uri: target.disks[0].uri });
      await guest.pwrite(written, 3 * MiB + 4 * KiB);
      await guest.flush();
      await guest.close();
      const withWrite = expected.slice();
      withWrite.set(written, 3 * MiB + 4 * KiB);
      await Deno.writeFile(at("p1-guest.raw"), withWrite);
      const reads = await readWhile(target.disks[0].uri, withWrite, out);
      const r = await out;
      const text = new TextDecoder();
      assert.equal(r.code, 0, text.decode(r.stderr));
      assert.ok(reads > 20, `only ${reads} reads during the job`);
      const summary = JSON.parse(text.decode(r.stdout));
      assert.equal(summary.bytes, SIZE);
      assert.equal(summary.resumed, false);
      assert.match(text.decode(r.stderr), /live restore to disk0 \(full\+incremental\)/);
      assert.equal(await incomplete(target), undefined, "the sidecar says complete");
      assert.deepEqual(await nodeNames(target), before, "no node of the restore is left");
      await assertRestored(target, at("p1-guest.raw"));
      await target.stop();
      target = undefined;
    });

    await t.step("SIGTERM and kill -9 leave it incomplete; the next run resumes", async () => {
      target = await Qsd.start({ disks: [{ size: SIZE }], monitors: 2 });
      const image = target.disks[0].image;
      const first = live(target, "1M");
      const r1Out = first.output();
      await jobStarted(target, r1Out);
      await new Promise((r) => setTimeout(r, 1500));
      first.kill("SIGTERM");
      const r1 = await r1Out;
      assert.equal(r1.code, 8, new TextDecoder().decode(r1.stderr));
      assert.match(new TextDecoder().decode(r1.stderr), /cancelled.*resume/);
      assert.ok(await incomplete(target), "marked incomplete");

      const second = live(target, "1M");
      const r2Out = second.output();
      await jobStarted(target, r2Out);
      await new Promise((r) => setTimeout(r, 1000));
      second.kill("SIGKILL");
      await r2Out;
      assert.ok(await incomplete(target), "still marked incomplete");

      const third = live(target, "64M");
      const r3 = await third.output();
      assert.equal(r3.code, 0, new TextDecoder().decode(r3.stderr));
      assert.equal(JSON.parse(new TextDecoder().decode(r3.stdout)).resumed, true);
      const ours = (await nodeNames(target)).filter((n) => n.startsWith("dirtybit-live-"));
      assert.deepEqual(ours, [], "the killed attempts' export nodes are gone");
      assert.equal(await incomplete(target), undefined);
      await assertRestored(target, at("p1.raw"));
      assert.ok(!(await Deno.stat(`${image}.dbit-live.sock`).then(() => true, () => false)));
    });

    await t.step("bad input: one-line errors", async () => {
      const small = await Qsd.start({ disks: [{ size: SIZE / 2 }] });
      try {
        const args = ["restore", "--live", "--qmp", small.qmpSocket];
        assertOneLineError(await dirtybit([...args, ...chain]), 2, "--node");
        assertOneLineError(
          await dirtybit([...args, "--node", "disk0", ...chain]),
          4,
          "create the target with that size",
        );
        assertOneLineError(await dirtybit([...args, "--node", "nope", ...chain]), 5, "not found");
        assertOneLineError(
          await dirtybit([...args, "--node", "disk0", chain[1]]),
          4,
        );
        assert.ok(!(await Deno.stat(`${small.disks[0].image}.dbit.json`).catch(() => null)));
      } finally {
        await small.stop();
      }
    });

    await t.step("into a disk a guest device holds (QEMU, paused)", async () => {
      const image = at("vm.qcow2");
      await run("qemu-img", ["create", "-q", "-f", "qcow2", image, String(SIZE)]);
      const qmpPath = at("vm.qmp");
      const vm = new Deno.Command("qemu-system-x86_64", {
        args: [
          ...["-S", "-accel", "tcg", "-m", "32", "-nodefaults", "-display", "none"],
          ...["-blockdev", `driver=file,node-name=f0,filename=${image}`],
          ...["-blockdev", "driver=qcow2,node-name=disk0,file=f0"],
          ...["-device", "virtio-blk-pci,drive=disk0,id=vda"],
          ...["-qmp", `unix:${qmpPath},server=on,wait=off`],
        ],
        stdout: "null",
        stderr: "null",
      }).spawn();
      try {
        await waitFor(
          "QEMU's monitor",
          30_000,
          () => Deno.stat(qmpPath).then(() => true, () => false),
        );
        await dirtybitOk(["restore", "--live", "--qmp", qmpPath, "--node", "disk0", ...chain]);
        // Read-only: a writable export of a node a device holds is refused.
        const qmp = await QmpSocket.connect(qmpPath);
        const nbd = at("vm-nbd.sock");
        await qmp.execute("nbd-server-start", { addr: { type: "unix", data: { path: nbd } } });
        await qmp.execute("block-export-add", {
          type: "nbd",
          id: "vda",
          "node-name": "disk0",
          name: "vda",
        });
        await run("qemu-img", [
          ...["compare", "-f", "raw", "-F", "raw"],
          ...[`nbd+unix:///vda?socket=${nbd}`, at("p1.raw")],
        ]);
        await qmp.execute("quit").catch(() => {});
        await qmp.close();
      } finally {
        vm.kill("SIGKILL");
        await vm.status;
      }
      await assertSameImage(image, at("p1.raw"));
    });
  } finally {
    await target?.stop().catch(() => {});
    await source.stop();
    await Deno.remove(tmp, { recursive: true });
  }
});
