/**
 * Replication jobs through the plugin (`mode=`), driven by the FD emulator
 * against `dirtybit backend` with real QEMU on both sites
 * (qemu-storage-daemon as each site's VM): receiver jobs start detached
 * receivers that outlive their job, seed and bitmap_push jobs replicate
 * (the replica compared with `qemu-img compare`), then the failover ->
 * failback -> reprotect round trip as jobs. Every job's record is its one
 * virtual file; a failing step fails its job.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { FdEmulator } from "./ptcomm/emulator.ts";
import { BACKEND_COMMAND, restoreSession } from "./ptcomm/sessions.ts";
import { detachedProcess, FailoverBed, imagesEqual, type Vm } from "./replication/sites.ts";
import { delay } from "../lib/core/async.ts";
import { freePort } from "./helpers.ts";

const MiB = 1 << 20;

// deno-lint-ignore no-explicit-any
type Json = any;

interface JobOutcome {
  fname: string;
  record: Json;
  info: string[];
}

function job(jobId: number): string[] {
  return [`Name=Repl.${jobId}`, `JobID=${jobId}`, "Type=B", "Level=F", "Namespace=@cloudstack"];
}

/** Runs one replication job that must succeed; returns its record and I messages. */
async function modeJob(cwd: string, jobId: number, params: string[]): Promise<JobOutcome> {
  const fd = new FdEmulator(BACKEND_COMMAND, { cwd, timeoutMs: 120_000 });
  try {
    await fd.open(job(jobId), params);
    await fd.command("BackupStart");
    await fd.expect("F");
    const files = await fd.readFiles(true);
    await fd.end();
    const { code, stderr } = await fd.exit();
    assert.equal(code, 0, `job ${jobId}: ${fd.said("A", "E", "W").join(" | ")}`);
    assert.equal(stderr, "");
    assert.equal(files.length, 1);
    const stat = files[0].attrs.find((a) => a.startsWith("STAT:"))!;
    assert.equal(stat.split(" ")[1], String(files[0].data!.length));
    return {
      fname: files[0].fname,
      record: JSON.parse(new TextDecoder().decode(files[0].data!)),
      info: fd.said("I"),
    };
  } finally {
    await fd.dispose();
  }
}

/** Runs one replication job that must fail (at its parameters or its step); returns its A. */
async function failedJob(cwd: string, jobId: number, params: string[]): Promise<string> {
  const fd = new FdEmulator(BACKEND_COMMAND, { cwd, timeoutMs: 120_000 });
  try {
    await fd.hello();
    await fd.block("Job", job(jobId));
    await fd.expect("F");
    await fd.block("Params", params);
    let p = await fd.next("F or A");
    if (p?.kind === "F") {
      await fd.command("BackupStart");
      p = await fd.next("A");
    }
    while (p && p.kind !== "A") p = await fd.next("A");
    await fd.closeInput();
    const { code, stderr } = await fd.exit();
    assert.notEqual(code, 0);
    assert.equal(stderr, "");
    const abort = fd.said("A");
    assert.equal(abort.length, 1);
    return abort[0];
  } finally {
    await fd.dispose();
  }
}

/** The sender parameters of `v`'s disk `vda` to a receiver on `port`, without retries. */
function senderParams(bed: FailoverBed, v: Vm, port: number, stateDir: string): string[] {
  return [
    `qmp=${v.qmp}`,
    "node=disk0",
    `nbd_socket=${v.nbd}`,
    "dr_host=127.0.0.1",
    `dr_port=${port}`,
    `psk_file=${bed.psk}`,
    "name=vda",
    `state_dir=${stateDir}`,
    "retry_count=0",
    `log_file=${join(bed.root, "backend.log")}`,
  ];
}

Deno.test("mode= jobs: receiver, seed, bitmap_push, status, failover, failback, reprotect", async () => {
  const bed = await FailoverBed.create("dirtybit-modes-");
  const { root, psk, stateA, dirB, imageA, stopped, vm, started } = bed;
  const portB = freePort();
  const portA = freePort();
  const log = `log_file=${join(root, "backend.log")}`;
  const sender = (v: Vm, port: number, stateDir: string) => senderParams(bed, v, port, stateDir);
  const receiverAt = (dir: string, port: number, procs: string) => [
    "mode=receiver",
    `listen=127.0.0.1:${port}`,
    `psk_file=${psk}`,
    `replica_dir=${dir}`,
    `state_dir=${join(root, procs)}`,
    log,
  ];
  let id = 0;
  const run = (params: string[]) => modeJob(root, ++id, params);
  try {
    // B's receiver: started by a job, it outlives it; a second job finds it.
    const r1 = await run(receiverAt(dirB, portB, "b-procs"));
    started(detachedProcess(r1.record.result.pid));
    assert.equal(r1.fname, `/@cloudstack/replication/receiver-${portB}/receiver-1.json`);
    assert.equal(r1.record.mode, "receiver");
    assert.equal(r1.record.result.already, false);
    assert.match(r1.info.join("\n"), /replicate receive started as pid \d+ \(log .*\.log/);
    const r2 = await run(receiverAt(dirB, portB, "b-procs"));
    assert.equal(r2.record.result.already, true);
    assert.equal(r2.record.result.pid, r1.record.result.pid);
    assert.match(r2.info.join("\n"), /replicate receive already runs as pid/);

    // Seed, then two cycles with guest writes between.
    let vmA = await vm(imageA, "vm-a");
    const toB = () => sender(vmA, portB, stateA);
    const seed = await run(["mode=seed", ...toB()]);
    assert.equal(seed.fname, "/@cloudstack/replication/vda/seed-3.json");
    assert.match(seed.info.join("\n"), /vda: seeded, \d+ bytes sent/);
    assert.ok(seed.record.result.seedId);
    const replicaB = join(dirB, "vda.qcow2");
    await vmA.write(0x21, 8 * MiB, MiB);
    const push1 = await run(["mode=bitmap_push", ...toB()]);
    assert.equal(push1.record.result.cycle, 1);
    assert.equal(push1.record.result.dirtyBytes, MiB);
    assert.match(push1.info.join("\n"), /vda: cycle 1 confirmed: 1048576 bytes dirty/);
    await vmA.writeRandom(12 * MiB, 2 * MiB);
    const push2 = await run(["mode=bitmap_push", ...toB()]);
    assert.equal(push2.record.result.cycle, 2);
    assert.ok(await imagesEqual(await vmA.snapshot(join(root, "push2.raw")), replicaB));

    // Status, from A's state directory and from B's receiver.
    const st = await run(["mode=replication_status", "name=vda", `state_dir=${stateA}`, log]);
    assert.equal(st.record.result.source, "state_dir");
    const [row] = st.record.result.disks;
    assert.equal(row.name, "vda");
    assert.equal(row.role, "primary/replicating");
    assert.equal(row.confirmedCycle, 2);
    assert.equal(row.errors, 0);
    assert.match(st.info.join("\n"), /vda: cycle 2, lag \d+ s/);
    const stB = await run([
      "mode=replication_status",
      "dr_host=127.0.0.1",
      `dr_port=${portB}`,
      `psk_file=${psk}`,
      log,
    ]);
    assert.equal(stB.record.result.disks[0].confirmedCycle, 2);

    // A step the disk's role forbids fails its job with the reason.
    const refused = await failedJob(root, ++id, ["mode=reprotect", ...toB()]);
    assert.match(refused, /disk vda is primary\/replicating: reprotect from this side needs/);
    // So does an unreachable receiver.
    const down = await failedJob(root, ++id, [
      "mode=bitmap_push",
      ...sender(vmA, freePort(), stateA),
    ]);
    assert.match(down, /127\.0\.0\.1/);

    // Failover: final cycle and fence at A, promote at B.
    await vmA.write(0x22, 16 * MiB, MiB);
    const pre = await run(["mode=failover_pre", ...toB()]);
    assert.equal(pre.record.result.cycle, 3);
    assert.match(pre.info.join("\n"), /final cycle 3 confirmed .*fenced/);
    const atFailover = await vmA.snapshot(join(root, "at-failover.raw"));
    await stopped(vmA);
    const exec = await run([
      "mode=failover_exec",
      "name=vda",
      `replica_dir=${dirB}`,
      log,
    ]);
    assert.equal(exec.record.result.cycle, 3);
    assert.equal(exec.record.result.image, replicaB);
    assert.match(exec.info.join("\n"), /replica promoted at cycle 3/);
    assert.ok(await imagesEqual(atFailover, replicaB));

    // The VM runs at B; failback to A's receiver, which a job starts too.
    const vmB = await vm(replicaB, "vm-b");
    await vmB.write(0x31, 2 * MiB, MiB);
    await vmB.write(0x32, 20 * MiB, MiB);
    const rA = await run(receiverAt(stateA, portA, "a-procs"));
    const recvA = started(detachedProcess(rA.record.result.pid));
    const toA = sender(vmB, portA, dirB);
    const fb = await run(["mode=failback_pre", ...toA]);
    assert.equal(fb.record.result.stats.dataBytes, 2 * MiB);
    assert.match(fb.info.join("\n"), /original primary resynced/);
    await vmB.write(0x34, 28 * MiB, MiB);
    const fx = await run(["mode=failback_exec", ...toA]);
    assert.equal(fx.record.result.remoteRole, "primary/promoted");
    vmA = await bed.backAtA(vmB, recvA);

    // Reprotect at A, then cycles A -> B again without a full copy.
    const rp = await run(["mode=reprotect", ...toB()]);
    assert.equal(rp.record.result.remoteRole, "replica/replicating");
    const again = await run(["mode=bitmap_push", ...toB()]);
    assert.equal(again.record.result.dirtyBytes, MiB);
    assert.ok(await imagesEqual(await vmA.snapshot(join(root, "end.raw")), replicaB));

    // The daemon: started by a job, found by the next; it replicates on its own.
    const daemonJob = ["mode=daemon", ...toB(), "cycle_interval=1"];
    const d1 = await run(daemonJob);
    started(detachedProcess(d1.record.result.pid));
    assert.match(d1.info.join("\n"), /replicate daemon started as pid/);
    const d2 = await run(daemonJob);
    assert.equal(d2.record.result.already, true);
    await vmA.write(0x42, 4 * MiB, MiB);
    const source = await vmA.snapshot(join(root, "daemon.raw"));
    const statePath = join(stateA, "vda.replication.json");
    const before = again.record.result.cycle;
    for (let i = 0; i < 300; i++) {
      const state = JSON.parse(await Deno.readTextFile(statePath));
      if (state.confirmedCycle > before && await imagesEqual(source, replicaB)) break;
      await delay(100);
    }
    assert.ok(await imagesEqual(source, replicaB), "the daemon's cycles carried the write");

    // A record restores as the file it was, under the where prefix.
    const where = join(root, "restored");
    const data = new TextEncoder().encode(JSON.stringify(again.record));
    const restored = await restoreSession(root, where, [log, "mode=bitmap_push"], [
      { fname: again.fname, attrs: [], data, packetSizes: [] },
    ]);
    assert.deepEqual(restored.answers, ["OK"]);
    assert.deepEqual(await Deno.readFile(`${where}${again.fname}`), data);
  } finally {
    await bed.cleanup();
  }
});

Deno.test("mode=failover_exec: refused while the source is not fenced; force=true promotes", async () => {
  const bed = await FailoverBed.create("dirtybit-modes-force-");
  try {
    const vmA = await bed.vm(bed.imageA, "vm-a");
    const recvB = await bed.receiver(bed.dirB);
    await modeJob(bed.root, 1, ["mode=seed", ...senderParams(bed, vmA, recvB.port, bed.stateA)]);
    const exec = ["mode=failover_exec", "name=vda", `replica_dir=${bed.dirB}`];
    assert.match(
      await failedJob(bed.root, 2, exec),
      /the source of vda did not report itself fenced at cycle 0 .*failover exec and force /,
    );
    const forced = await modeJob(bed.root, 3, [...exec, "force=true"]);
    assert.equal(forced.record.result.unfenced.cycle, 0);
    assert.match(forced.info.join("\n"), /vda: promoted without fencing the source: RPO/);
  } finally {
    await bed.cleanup();
  }
});

Deno.test("mode= jobs: unknown mode and missing parameters are refused in one line", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-modes-" });
  try {
    const log = `log_file=${join(dir, "backend.log")}`;
    const cases: [string[], RegExp][] = [
      [["mode=bogus"], /^parameter mode='bogus': must be one of backup, seed, bitmap_push, /],
      [["mode=failover_exec", "name=vda"], /^mode=failover_exec: parameter replica_dir is missing/],
      [
        ["mode=receiver", "replica_dir=/x", "psk=0123456789abcdef0123456789abcdef"],
        /psk_file=FILE/,
      ],
    ];
    let id = 100;
    for (const [params, text] of cases) {
      const abort = await failedJob(dir, ++id, [...params, log]);
      assert.match(abort, text);
      assert.ok(!abort.includes("\n"));
    }
    // An estimate of a replication job lists its record.
    const fd = new FdEmulator(BACKEND_COMMAND, { cwd: dir, timeoutMs: 60_000 });
    try {
      await fd.open(
        ["Name=-Console-.1", "JobID=0", "Type=E", "Level=F"],
        ["mode=failover_exec", "name=vda", `replica_dir=${dir}`, log],
      );
      await fd.command("EstimateStart");
      await fd.expect("F");
      const [file, ...more] = await fd.readFiles(false);
      assert.equal(more.length, 0);
      assert.equal(file.fname, "/@cloudstack/replication/vda/failover_exec-0.json");
      assert.ok(Number(file.attrs.find((a) => a.startsWith("STAT:"))!.split(" ")[1]) > 50);
      await fd.end();
      assert.equal((await fd.exit()).code, 0);
    } finally {
      await fd.dispose();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
