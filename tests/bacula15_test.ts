/**
 * The real plugin in real Bacula 15.0.3 (built by `make bacula15` into
 * .tools/bacula15): cloudstack-fd.so built from this tree, the backend
 * wrapper and a `dirtybit` in the FD's executable directory, daemons on
 * loopback with an SQLite catalog, jobs driven with bconsole as a user
 * would, on a live qemu-storage-daemon disk. Every restore is compared with
 * `qemu-img compare` against the disk as it was at that job; a job counts as
 * good only with status T and 0 errors.
 *
 * @module
 */
import assert from "node:assert/strict";
import { BaculaLab, isGood, type JobResult } from "./bacula/harness.ts";
import { processInfo } from "../lib/core/process.ts";
import { bacula15, bacula15Missing, prepareBacula15 } from "./bacula/bacula15.ts";
import { Qsd } from "./fixtures/qsd.ts";
import { fillRandom } from "./fixtures/bytes.ts";
import { delay } from "../lib/core/async.ts";
import { PARAMS, type ParamSpec } from "../lib/params/params.ts";
import { join } from "node:path";
import { detachedFromPidFile, FailoverBed, imagesEqual } from "./replication/sites.ts";
import { freePort } from "./helpers.ts";

const missing = bacula15Missing();
if (missing.length > 0) {
  console.log(
    `bacula15_test skipped: the Bacula 15 build is absent (${missing[0]}): run make bacula15`,
  );
}

const MiB = 1 << 20;
/** The Job's FD-to-SD cap, so that a job with a few MiB of random data runs long enough to cancel. */
/** The lab's bacula-fd (its command line names the lab's config in `dir`) and all its descendants. */
async function fdProcesses(dir: string): Promise<number[]> {
  const rows: { pid: number; ppid: number; argv: string[] }[] = [];
  for await (const e of Deno.readDir("/proc")) {
    const pid = Number(e.name);
    const info = pid > 0 ? await processInfo(pid) : undefined;
    if (info) rows.push({ pid, ...info });
  }
  const found = rows.filter((r) =>
    r.argv.some((a) => a.startsWith(`${dir}/`) && a.endsWith("fd.conf"))
  )
    .map((r) => r.pid);
  for (let i = 0; i < found.length; i++) {
    for (const r of rows) if (r.ppid === found[i]) found.push(r.pid);
  }
  return found;
}

function signalAll(pids: number[], signal: Deno.Signal): void {
  for (const pid of pids) {
    try {
      Deno.kill(pid, signal);
    } catch {
      // exited meanwhile
    }
  }
}

async function compare(format: "raw" | "qcow2", expected: string, restored: string) {
  const out = await new Deno.Command("qemu-img", {
    args: ["compare", "-f", "raw", "-F", format, expected, restored],
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `${restored} differs from ${expected}: ${text}`);
}

function good(job: JobResult, what: string): JobResult {
  assert.ok(isGood(job), `${what}: ${JSON.stringify(job)}`);
  return job;
}

/** The number bconsole shows for the restore option `name` in the Plugin Options menu. */
function restoreOptionNumber(name: string): number {
  const names = Object.entries(PARAMS).filter(([, s]) => (s as ParamSpec).restore).map(([n]) => n);
  const i = names.indexOf(name);
  assert.ok(i >= 0, `${name} is not a restore option`);
  return i + 1;
}

Deno.test({
  name:
    "bacula 15: the real plugin through Full, Incremental, Differential, estimate, .ls, .query, restores, cancels, fallback fulls",
  ignore: missing.length > 0,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const qsd = await Qsd.start({
      disks: [{ size: 64 * MiB, writes: [{ pattern: 0x11, offset: 0, length: 4 * MiB }] }],
    });
    const { dir, bin, plugins } = await prepareBacula15();
    const plugin = `cloudstack: vm=vm1 qmp=${qsd.qmpSocket} nbd_socket=${qsd.nbdSocket} node=disk0`;
    let lab: BaculaLab | undefined;
    try {
      lab = await BaculaLab.start(bacula15(bin, plugins), [
        { name: "Cs", plugin },
        { name: "CsBogus", plugin: `${plugin} bogus=1` },
      ], dir);
      const l = lab;
      const snap = async (name: string) => {
        const path = `${dir}/${name}.raw`;
        await qsd.snapshotImage(0, path);
        return path;
      };
      const randomWrite = (offset: number, length: number) =>
        qsd.guestPwrite(0, fillRandom(new Uint8Array(length)), offset);
      const restoreInto = (where: string, selection: string, answers: string[] = []) =>
        l.runAndWait(
          `restore ${selection} client=lab-fd fileset=Cs where=${where} all done${
            answers.length ? "" : " yes"
          }`,
          answers,
        );
      const restoredRaw = (where: string) => `${where}/@cloudstack/vm1/disk0.raw`;

      const jobs: Record<string, { id: number; disk: string }> = {};
      // Later steps build on earlier ones: stop at the first that fails.
      const step = async (name: string, fn: () => Promise<void>) => {
        if (!(await t.step(name, fn))) throw new Error(`step failed: ${name}`);
      };
      await step("the FD loads the plugin", async () => {
        const out = await l.console("status client=lab-fd");
        assert.match(out, /Plugin: .*cloudstack/, out);
      });

      await step("Full, guest writes, Incremental, Differential, Incremental", async () => {
        await randomWrite(8 * MiB, 2 * MiB);
        jobs.full = {
          id: good(await l.backup("Cs", "Full"), "full").jobId,
          disk: await snap("j1"),
        };
        await qsd.guestWrite(0, 0x22, 16 * MiB, 1 * MiB);
        jobs.incr1 = {
          id: good(await l.backup("Cs", "Incremental"), "incr1").jobId,
          disk: await snap("j2"),
        };
        await qsd.guestWrite(0, 0x33, 24 * MiB, 1 * MiB);
        const diff = good(await l.backup("Cs", "Differential"), "diff");
        assert.doesNotMatch(diff.log, /full backup instead of differential/);
        jobs.diff = { id: diff.jobId, disk: await snap("j3") };
        await qsd.guestWrite(0, 0x44, 32 * MiB, 1 * MiB);
        jobs.incr2 = {
          id: good(await l.backup("Cs", "Incremental"), "incr2").jobId,
          disk: await snap("j4"),
        };
        // The defaults under the FD's WorkingDir.
        await Deno.stat(`${dir}/fd/dirtybit/vm1`);
        await Deno.stat(`${dir}/fd/dirtybit-backend.log`);
        await Deno.stat(`${dir}/fd/dirtybit/vm1/bacula-jobs.json`);
      });

      await step("estimate, estimate listing, .ls and .query", async () => {
        const full = await l.console("estimate job=Cs level=Full");
        const fullBytes = Number(/bytes=([\d,]+)/.exec(full)?.[1].replaceAll(",", ""));
        assert.ok(
          fullBytes > 0 && fullBytes < 64 * MiB,
          `full estimate reads ${fullBytes}: ${full}`,
        );
        await qsd.guestWrite(0, 0x55, 40 * MiB, 1 * MiB);
        const incr = await l.console("estimate job=Cs level=Incremental listing");
        assert.match(incr, /\/@cloudstack\/vm1\/disk0\/incremental-0\.dbit/, incr);
        const incrBytes = Number(/bytes=([\d,]+)/.exec(incr)?.[1].replaceAll(",", ""));
        assert.ok(incrBytes >= 1 * MiB && incrBytes <= 2 * MiB, `incremental estimate ${incr}`);
        const q = plugin.replaceAll('"', '\\"');
        const ls = await l.console(`.ls client=lab-fd plugin="${q}" path=/@cloudstack/vm1/`);
        assert.match(ls, /disk0\//, ls);
        const query = await l.console(`.query client=lab-fd plugin="${q}" parameter=disks`);
        assert.match(query, /disk=disk0\s+level=incremental\s+bytes=1048576/, query);
        jobs.incr3 = {
          id: good(await l.backup("Cs", "Incremental"), "incr3").jobId,
          disk: await snap("j5"),
        };
      });

      await step("restores: most recent backup, explicit JobIds, format=qcow2", async () => {
        const recent = `${dir}/r-recent`;
        good(await restoreInto(recent, "current select"), "restore of the most recent backup");
        await compare("raw", jobs.incr3.disk, restoredRaw(recent));
        const two = `${dir}/r-incr1`;
        good(await restoreInto(two, `jobid=${jobs.full.id},${jobs.incr1.id}`), "restore 1+2");
        await compare("raw", jobs.incr1.disk, restoredRaw(two));
        const diff = `${dir}/r-diff`;
        good(await restoreInto(diff, `jobid=${jobs.full.id},${jobs.diff.id}`), "restore F+D");
        await compare("raw", jobs.diff.disk, restoredRaw(diff));
        const qcow = `${dir}/r-qcow2`;
        const ids = [jobs.full, jobs.diff, jobs.incr2].map((j) => j.id).join(",");
        const r = await restoreInto(qcow, `jobid=${ids}`, [
          "mod",
          "13", // Plugin Options
          "mod",
          String(restoreOptionNumber("format")),
          "qcow2",
          "yes",
          "yes",
        ]);
        good(r, "restore with format=qcow2");
        await compare("qcow2", jobs.incr2.disk, `${qcow}/@cloudstack/vm1/disk0.qcow2`);
      });

      await step(
        "a missing middle job fails the restore with one error naming the gap",
        async () => {
          const r = await restoreInto(`${dir}/r-gap`, `jobid=${jobs.full.id},${jobs.incr2.id}`);
          assert.ok(!isGood(r), JSON.stringify(r));
          // One job error from the FD, naming the gap; no second "PTCOMM cannot get packet header".
          assert.equal((r.log.match(/lab-fd JobId \d+: Error/g) ?? []).length, 1, r.log);
          assert.match(r.log, /is based on .*, but the last stream applied is full backup/);
        },
      );

      /** Starts a backup, cancels it once its data flows, then checks that it ended cancelled. */
      const cancelMid = async (level: "Full" | "Incremental") => {
        // A fast machine can end the job before the cancel lands: then try again, the job it
        // finished being just one more good backup of the chain.
        for (let attempt = 1;; attempt++) {
          await randomWrite(36 * MiB, 24 * MiB);
          const id = await l.queue(`run job=Cs level=${level} yes`);
          const log = `${dir}/fd/dirtybit-backend.log`;
          for (let i = 0; !(await Deno.readTextFile(log)).includes(`id=${id} type=B`); i++) {
            assert.ok(i < 400, "the backend never started");
            await delay(50);
          }
          // Bacula's bandwidth limit does not hold plugin data back reliably, so the
          // backend is frozen mid-job: the cancel then lands before it ends.
          await delay(100);
          const backend = (await fdProcesses(dir)).slice(1);
          signalAll(backend, "SIGSTOP");
          await l.console(`cancel jobid=${id} yes`);
          await delay(1000);
          signalAll(backend, "SIGCONT");
          const r = await l.wait(id);
          if (r.status === "T" && attempt < 4) continue;
          assert.equal(r.status, "A", JSON.stringify(r));
          break;
        }
        await qsd.guestWrite(0, 0x66, 20 * MiB, 1 * MiB);
        const next = good(
          await l.backup("Cs", "Incremental"),
          `incremental after a ${level} cancel`,
        );
        const disk = await snap(`after-cancel-${level}`);
        const where = `${dir}/r-cancel-${level}`;
        good(await restoreInto(where, "current select"), `restore after the ${level} cancel`);
        await compare("raw", disk, restoredRaw(where));
        return next;
      };
      await step("cancel mid-Full, then the next Incremental restores equal", async () => {
        await cancelMid("Full");
      });
      await step("cancel mid-Incremental, then the next Incremental restores equal", async () => {
        await cancelMid("Incremental");
      });

      await step("a fallback full inside an Incremental, then a Differential", async () => {
        // A killed QEMU leaves its persistent bitmaps inconsistent: no incremental is possible.
        await qsd.kill();
        await qsd.restart();
        await qsd.guestWrite(0, 0x77, 28 * MiB, 1 * MiB);
        const incr = good(await l.backup("Cs", "Incremental"), "incremental with a fallback full");
        assert.equal((incr.log.match(/full backup: /g) ?? []).length, 1, incr.log);
        await qsd.guestWrite(0, 0x78, 30 * MiB, 1 * MiB);
        const diff = good(await l.backup("Cs", "Differential"), "differential after it");
        assert.match(diff.log, /full backup instead of differential/);
        const disk = await snap("after-fallback");
        const where = `${dir}/r-fallback`;
        good(await restoreInto(where, "current select"), "restore after the fallback full");
        await compare("raw", disk, restoredRaw(where));
      });

      await step("an unknown parameter fails the job, naming it", async () => {
        const r = await l.backup("CsBogus", "Full");
        assert.ok(!isGood(r), JSON.stringify(r));
        assert.match(r.log, /bogus/);
      });

      await step("a missing dirtybit fails the job with a clear message", async () => {
        await Deno.rename(`${bin}/dirtybit`, `${bin}/dirtybit.away`);
        try {
          const r = await l.backup("Cs", "Incremental");
          assert.ok(!isGood(r), JSON.stringify(r));
          assert.match(r.log, /no dirtybit at .*\/bin\/dirtybit/);
          const est = await l.console("estimate job=Cs level=Incremental");
          assert.match(est, /no dirtybit at/);
        } finally {
          await Deno.rename(`${bin}/dirtybit.away`, `${bin}/dirtybit`);
        }
      });
    } finally {
      await lab?.stop();
      await qsd.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "bacula 15: replication as plugin jobs: receiver, seed, two bitmap_push, status, failover, failback",
  ignore: missing.length > 0,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const bed = await FailoverBed.create("dirtybit-bacula15-repl-");
    const { root, psk, stateA, dirB, imageA } = bed;
    const { dir, bin, plugins } = await prepareBacula15();
    const [portB, portA] = [freePort(), freePort()];
    const vmDir = (name: string) => join(root, name);
    const sender = (vm: string, port: number, stateDir: string) =>
      `qmp=${vmDir(vm)}/qmp.sock node=disk0 nbd_socket=${vmDir(vm)}/nbd.sock ` +
      `dr_host=127.0.0.1 dr_port=${port} psk_file=${psk} name=vda state_dir=${stateDir} retry_count=0`;
    const receiver = (port: number, replicas: string, procs: string) =>
      `mode=receiver listen=127.0.0.1:${port} psk_file=${psk} replica_dir=${replicas} ` +
      `state_dir=${join(root, procs)}`;
    const jobs: [string, string][] = [
      ["RecvB", receiver(portB, dirB, "b-procs")],
      ["Seed", `mode=seed ${sender("vm-a", portB, stateA)}`],
      ["Push", `mode=bitmap_push ${sender("vm-a", portB, stateA)}`],
      ["Status", `mode=replication_status name=vda state_dir=${stateA}`],
      ["FoPre", `mode=failover_pre ${sender("vm-a", portB, stateA)}`],
      ["FoExec", `mode=failover_exec name=vda replica_dir=${dirB}`],
      ["RecvA", receiver(portA, stateA, "a-procs")],
      ["FbPre", `mode=failback_pre ${sender("vm-b", portA, dirB)}`],
      ["FbExec", `mode=failback_exec ${sender("vm-b", portA, dirB)}`],
    ];
    let lab: BaculaLab | undefined;
    try {
      lab = await BaculaLab.start(
        bacula15(bin, plugins),
        jobs.map(([name, line]) => ({ name, plugin: `cloudstack: ${line}` })),
        dir,
      );
      const l = lab;
      const job = async (name: string) => good(await l.backup(name, "Full"), name);
      const replicaB = join(dirB, "vda.qcow2");

      const r1 = await job("RecvB");
      assert.match(r1.log, /replicate receive started as pid/);
      bed.started(await detachedFromPidFile(join(root, "b-procs", `receiver-${portB}.pid`)));
      assert.match((await job("RecvB")).log, /replicate receive already runs as pid/);

      const vmA = await bed.vm(imageA, "vm-a");
      assert.match((await job("Seed")).log, /vda: seeded/);
      await vmA.writeRandom(8 * MiB, 2 * MiB);
      assert.match((await job("Push")).log, /vda: cycle 1 confirmed: 2097152 bytes dirty/);
      await vmA.write(0x22, 16 * MiB, MiB);
      assert.match((await job("Push")).log, /vda: cycle 2 confirmed: 1048576 bytes dirty/);
      assert.ok(await imagesEqual(await vmA.snapshot(join(root, "push2.raw")), replicaB));
      assert.match((await job("Status")).log, /vda: cycle 2, lag \d+ s/);

      await vmA.write(0x23, 20 * MiB, MiB);
      assert.match((await job("FoPre")).log, /final cycle 3 confirmed/);
      const atFailover = await vmA.snapshot(join(root, "at-failover.raw"));
      await bed.stopped(vmA);
      assert.match((await job("FoExec")).log, /replica promoted at cycle 3/);
      assert.ok(await imagesEqual(atFailover, replicaB));

      const vmB = await bed.vm(replicaB, "vm-b");
      await vmB.write(0x31, 2 * MiB, MiB);
      await job("RecvA");
      const recvA = bed.started(
        await detachedFromPidFile(join(root, "a-procs", `receiver-${portA}.pid`)),
      );
      assert.match((await job("FbPre")).log, /original primary resynced/);
      await vmB.write(0x32, 24 * MiB, MiB);
      assert.match((await job("FbExec")).log, /the original site is primary\/promoted/);
      await bed.backAtA(vmB, recvA);
      // A failing step fails its job: A is primary again, its failover exec is refused.
      const refused = await l.backup("FoExec", "Full");
      assert.ok(!isGood(refused), JSON.stringify(refused));
      assert.match(refused.log, /disk vda is replica\/fenced.*: failover exec/);
    } finally {
      await lab?.stop();
      await bed.cleanup();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
