/**
 * Backup of a CloudStack VM named by its user, end to end: the CloudStack
 * API simulator (tests/sim/cloudstack.ts) resolves the VM to its host, a
 * loopback sshd as root is the KVM host, and a real libvirt runs the VM as
 * the TCG domain `h5-i-2-10-VM` with qcow2 disks under `/mnt/<pool-uuid>/`
 * (tests/fixtures/libvirt.ts), backed up through libvirt's checkpoints and
 * pull backups. One domain serves every case; at the end CloudStack "stops"
 * it (the domain destroyed and undefined, as CloudStack's agent does) and
 * its volumes are read on primary storage through the same host.
 *
 * The source image of a check is taken after flushing through HMP, with
 * `qemu-img convert -U` (docs/qemu-nbd.md §4); guest writes are HMP
 * `qemu-io`. No guest OS runs, so libvirt's guest agent is never connected
 * (the real path gives a crash-consistent backup with a warning); the
 * quiesce cases use the SIMULATED agent of the fixture, reached by host
 * commands over the real sshd, with the real thaw guard.
 */
import {
  deepStrictEqual as assertEquals,
  match as assertMatch,
  ok as assert,
} from "node:assert/strict";
import { basename, join } from "node:path";
import { SourceError } from "../lib/core/errors.ts";
import type { DiskBackupResult, PlannedDisk } from "../lib/backup/plan.ts";
import { runVmBackup, type VmSource } from "../lib/backup/vm_job.ts";
import { loadDiskState, ownerId } from "../lib/model/disk_state.ts";
import { openStreamFile } from "../lib/stream/reader.ts";
import { CloudStackSimulator, type SimScenario } from "./sim/cloudstack.ts";
import { startSshd, type TestSshd } from "./fixtures/sshd.ts";
import { startCloudStackVm, startFakeGuestAgent, type TestVm } from "./fixtures/libvirt.ts";
import { backupSession } from "./ptcomm/sessions.ts";
import { writeAll } from "../lib/core/bytes.ts";
import { delay } from "../lib/core/async.ts";
import { passThroughSink } from "../lib/sinks/sink.ts";
import { assertRejects, freePort, output, run } from "./helpers.ts";
import { dirtybit, dirtybitOk } from "./fixtures/cli.ts";

const API_KEY = "vm-test-apikey";
const SECRET = "vm-test-SeCrEt-0123456789abcdef";
const HOST_ID = "6a1b2c3d-0000-4aaa-8bbb-0000000000a1";
const MiB = 1 << 20;

interface Bed {
  vm: TestVm;
  sshd: TestSshd;
  sim: CloudStackSimulator;
  dir: string;
  secretFile: string;
  source(extra?: Partial<VmSource>): VmSource;
}

function scenario(vm: TestVm): SimScenario {
  return {
    users: [{ apiKey: API_KEY, secretKey: SECRET }],
    hosts: [{ id: HOST_ID, name: "kvm1.cloud.internal", ipaddress: "127.0.0.1" }],
    pools: [{
      id: vm.poolUuid,
      name: "nfs-primary",
      type: "NetworkFilesystem",
      path: "/export/primary",
    }],
    vms: [{
      id: vm.uuid,
      name: "web01",
      displayname: "Web one",
      instancename: vm.name,
      state: "Running",
      hostid: HOST_ID,
      cpunumber: 1,
      memory: 64,
      nic: [{ id: crypto.randomUUID(), macaddress: "02:00:4c:5e:00:01" }],
    }],
    volumes: vm.volumes.map((v, i) => ({
      id: v.id,
      name: `${v.type}-10${i ? `-${i}` : ""}`,
      type: v.type,
      deviceid: i,
      size: v.size,
      path: v.path,
      storageid: vm.poolUuid,
      virtualmachineid: vm.uuid,
    })),
    jobPendingPolls: 1,
  };
}

/** Flushes the guest disks through HMP and copies each volume to a raw file (the source oracle). */
async function snapshotSource(bed: Bed, name: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for (const [i, v] of bed.vm.volumes.entries()) {
    await bed.vm.hmp(`qemu-io -d /machine/peripheral/virtio-disk${i}/virtio-backend "flush"`);
    const out = join(bed.dir, `${name}-${v.target}.raw`);
    await run("qemu-img", ["convert", "-U", "-f", "qcow2", "-O", "raw", v.file, out]);
    files.set(v.id, out);
  }
  return files;
}

/** Runs a VM backup writing one stream file per disk into `dir`. */
async function backup(
  source: VmSource,
  stateDir: string,
  dir: string,
  options: {
    level?: "full" | "incremental" | "auto";
    takeOver?: boolean;
    onWrite?: () => Promise<void>;
  } = {},
): Promise<{ results: DiskBackupResult[]; files: Map<string, string>; warnings: string[] }> {
  await Deno.mkdir(dir, { recursive: true });
  const files = new Map<string, string>();
  const warnings: string[] = [];
  const results = await runVmBackup(source, {
    level: options.level ?? "auto",
    takeOver: options.takeOver,
    stateDir,
    compression: "zstd:1",
    streamPath: (disk) => files.get(disk.diskName),
    onMessage: (kind, text) => kind === "warning" && warnings.push(text),
  }, async (disk: PlannedDisk) => {
    const path = join(dir, `${disk.diskName}-${disk.level}.dbit`);
    files.set(disk.diskName, path);
    const file = await Deno.open(path, { write: true, create: true, truncate: true });
    return passThroughSink(
      new WritableStream<Uint8Array>({
        async write(chunk) {
          await options.onWrite?.();
          await writeAll(file, chunk);
        },
        close: () => file.close(),
        abort: () => file.close(),
      }),
    );
  });
  return { results, files, warnings };
}

/** Restores a chain with the CLI and checks it equals `expected` bit for bit. */
async function assertRestoresTo(streams: string[], expected: string, dir: string): Promise<void> {
  const target = join(dir, `restored-${crypto.randomUUID().slice(0, 8)}.raw`);
  await dirtybitOk(["restore", "--out", target, ...streams]);
  const cmp = await output("cmp", [target, expected]);
  assertEquals(cmp.code, 0, `restored ${streams.join(" + ")} differs: ${cmp.stdout}`);
  await Deno.remove(target);
  await Deno.remove(`${target}.dbit.json`).catch(() => {});
}

async function header(path: string) {
  const reader = await openStreamFile(path);
  for await (const _ of reader.records()) { /* verify it all */ }
  return reader.header;
}

/** `p` must reject with a `type` matching `pattern`, and never show the secret key. */
async function assertFails(
  p: Promise<unknown>,
  type: abstract new (...args: never[]) => Error,
  pattern: RegExp,
): Promise<void> {
  const err = await assertRejects(p, type, pattern);
  assert(!err.message.includes(SECRET), "the secret key must never be shown");
}

/** Pids of this process's `ssh -L` children (the NBD tunnels it opened). */
async function tunnelPids(): Promise<number[]> {
  const pids: number[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = await Deno.readTextFile(`/proc/${entry.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const argv = (await Deno.readTextFile(`/proc/${entry.name}/cmdline`)).split("\0");
      // Deno.Command runs a command found on PATH as its full path (argv[0] /usr/bin/ssh).
      if (ppid === Deno.pid && basename(argv[0]) === "ssh" && argv.includes("-L")) {
        pids.push(Number(entry.name));
      }
    } catch { /* gone */ }
  }
  return pids;
}

/** Whether libvirt still runs a backup job of the VM (none may be left after a job). */
async function jobLeft(bed: Bed): Promise<boolean> {
  return (await output("virsh", ["-c", "qemu:///system", "backup-dumpxml", bed.vm.name])).code ===
    0;
}

/** libvirt's checkpoints of the VM, parents first. */
async function checkpointList(bed: Bed): Promise<string[]> {
  const out = await run("virsh", [
    "-c",
    "qemu:///system",
    "checkpoint-list",
    bed.vm.name,
    "--name",
    "--topological",
  ]);
  return out.split("\n").map((l) => l.trim()).filter(Boolean);
}

/** Copies each volume's image (the VM stopped: no flush needed) to a raw file. */
async function snapshotImages(bed: Bed, name: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for (const v of bed.vm.volumes) {
    const out = join(bed.dir, `${name}-${v.target}.raw`);
    await run("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", v.file, out]);
    files.set(v.id, out);
  }
  return files;
}

/**
 * A step that builds on what an earlier one left (a chain, its full's
 * files): ignored, not failed, when that one failed, so the report shows the
 * failure once, and the independent steps still run.
 */
function stepAfter(
  t: Deno.TestContext,
  after: boolean,
  name: string,
  fn: () => Promise<void>,
): Promise<boolean> {
  return t.step({ name, ignore: !after, fn });
}

Deno.test("CloudStack VM backup through its KVM host: access modes, incremental, failure paths", async (t) => {
  const vm = await startCloudStackVm({ name: `h5-i-2-10-VM-${Deno.pid}` });
  const sshd = await startSshd().catch(async (err) => {
    await vm.destroy();
    throw err;
  });
  const sim = CloudStackSimulator.start(scenario(vm));
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-vmtest-" });
  const secretFile = join(dir, "secret.key");
  await Deno.writeTextFile(secretFile, SECRET + "\n");
  const bed: Bed = {
    vm,
    sshd,
    sim,
    dir,
    secretFile,
    source: (extra = {}) => ({
      vm: "web01",
      cloud: { url: sim.apiUrl, apiKey: API_KEY, secretKey: SECRET, verifySsl: true },
      clientOptions: { pollIntervalMs: 10, jobTimeoutMs: 10_000 },
      ssh: {
        user: "root",
        port: sshd.port,
        keyPath: sshd.keyPath,
        knownHostsPath: sshd.knownHostsPath,
      },
      ...extra,
    }),
  };
  const [root, data] = vm.volumes;
  const state = join(dir, "state");
  try {
    await vm.guestWrite("vda", 0x5a, 4 * MiB, MiB);
    await vm.guestWrite("vdb", 0x77, 0, 2 * MiB);
    let fullFiles: Map<string, string>;

    const tunnelFull = await t.step(
      "ssh_tunnel: full backup restores equal to the source",
      async () => {
        const { results, files, warnings } = await backup(bed.source(), state, join(dir, "t1"));
        const source = await snapshotSource(bed, "t1");
        assertEquals(results.map((r) => [r.diskName, r.level]), [[root.id, "full"], [
          data.id,
          "full",
        ]]);
        assert(
          warnings.some((w) => /guest agent .* not available.*crash-consistent/.test(w)),
          warnings.join("\n"),
        );
        for (const v of vm.volumes) {
          await assertRestoresTo([files.get(v.id)!], source.get(v.id)!, dir);
        }
        const h = await header(files.get(root.id)!);
        assertEquals(h.disk, root.id);
        const def = h.metadata?.vm as { name: string; disks: { name: string; boot: boolean }[] };
        assertEquals(def.name, "Web one");
        assertEquals(def.disks.map((d) => [d.name, d.boot]), [[root.id, true], [data.id, false]]);
        assertEquals((await loadDiskState(state, data.id))?.lastBackupId, results[1].backupId);
        fullFiles = files;
        assertEquals(await jobLeft(bed), false);
        assertEquals(await tunnelPids(), []);
      },
    );

    await stepAfter(
      t,
      tunnelFull,
      "incremental after a guest write holds only the written blocks",
      async () => {
        await vm.guestWrite("vdb", 0xee, 8 * MiB, 128 << 10);
        const { results, files } = await backup(bed.source(), state, join(dir, "t2"));
        const source = await snapshotSource(bed, "t2");
        assertEquals(results.map((r) => r.level), ["incremental", "incremental"]);
        assertEquals(results[0].stats.dirtyBytes, 0);
        assertEquals(results[1].stats.dirtyBytes, 128 << 10);
        assertEquals(results[1].stats.dataBytes, 128 << 10);
        for (const v of vm.volumes) {
          await assertRestoresTo([fullFiles.get(v.id)!, files.get(v.id)!], source.get(v.id)!, dir);
        }
        // libvirt knows the chain's checkpoints: no raw monitor command made them.
        const owner = await ownerId(state);
        const history = (await loadDiskState(state, root.id))!.history;
        assertEquals(
          await checkpointList(bed),
          history.map((h) => `dirtybit-${owner}-${h.backupId}`),
        );
        // The stream files are in the disk's history, as a --qmp backup records them.
        assertEquals(history.slice(-2).map((h) => h.stream), [
          fullFiles.get(root.id),
          files.get(root.id),
        ]);
      },
    );

    const directFull = await t.step(
      "direct: QEMU's NBD server on the host's TCP port, quiesced (SIMULATED agent)",
      async () => {
        const qga = await startFakeGuestAgent();
        try {
          const port = freePort();
          // A full on the chain's own state dir: a second state dir would own the
          // same unscoped bitmaps and remove the ssh_tunnel chain's as stale.
          const { results, files, warnings } = await backup(
            bed.source({ accessMode: "direct", nbdPort: port, guestAgent: () => qga.agent }),
            state,
            join(dir, "t3"),
            { level: "full" },
          );
          const source = await snapshotSource(bed, "t3");
          assertEquals(results.map((r) => r.level), ["full", "full"]);
          assertEquals(warnings, []);
          assertEquals([qga.freezes, qga.thaws, qga.frozen], [1, 1, false]);
          for (const v of vm.volumes) {
            await assertRestoresTo([files.get(v.id)!], source.get(v.id)!, dir);
          }
          fullFiles = files;
          // The server is gone: nothing listens on the port any more.
          const probe = await Deno.connect({ hostname: "127.0.0.1", port }).then(
            (c) => c.close(),
            () => "refused",
          );
          assertEquals(probe, "refused");
        } finally {
          await qga.stop();
        }
      },
    );

    await t.step(
      "api_only: snapshot + extractVolume download streamed into full streams",
      async () => {
        const source = await snapshotSource(bed, "t4");
        sim.scenario.extractFiles = Object.fromEntries(source);
        const { results, files, warnings } = await backup(
          bed.source({ accessMode: "api_only" }),
          join(dir, "state-api"),
          join(dir, "t4"),
          { level: "incremental" },
        );
        assertEquals(results.map((r) => r.level), ["full", "full"]);
        assertEquals(
          warnings.filter((w) => /reads the whole volume/.test(w)).length,
          2,
        );
        for (const v of vm.volumes) {
          await assertRestoresTo([files.get(v.id)!], source.get(v.id)!, dir);
        }
        assertEquals(sim.calls("createSnapshot").length, 2);
        assertEquals(sim.calls("deleteSnapshot").length, 2);
        assertEquals(sim.calls("deleteVolume").length, 2);
        assertEquals((await header(files.get(data.id)!)).metadata?.vm !== undefined, true);
      },
    );

    await t.step("failure paths: keys, expired signature, VM, host, host key", async () => {
      const t5 = join(dir, "t5");
      await assertFails(
        backup(
          bed.source({ cloud: { ...bed.source().cloud, secretKey: "wrong-secret-key-123" } }),
          state,
          t5,
        ),
        SourceError,
        /refused the API key or request signature/,
      );
      sim.scenario.now = () => Date.now() + 3_600_000;
      try {
        await assertFails(backup(bed.source(), state, t5), SourceError, /clock of this machine/);
      } finally {
        sim.scenario.now = undefined;
      }
      await assertFails(backup(bed.source({ vm: "web99" }), state, t5), SourceError, /not found/);
      sim.scenario.hosts![0].ipaddress = "127.0.0.2";
      try {
        await assertFails(
          backup(bed.source(), state, t5),
          SourceError,
          /cannot reach SSH on 127\.0\.0\.2/,
        );
      } finally {
        sim.scenario.hosts![0].ipaddress = "127.0.0.1";
      }
      const wrongKey = bed.source();
      wrongKey.ssh.knownHostsPath = sshd.wrongKnownHostsPath;
      await assertFails(backup(wrongKey, state, t5), SourceError, /does not match known_hosts/);
    });

    await t.step(
      "a freeze that times out: guest thawed, job failed, nothing committed",
      async () => {
        const qga = await startFakeGuestAgent();
        try {
          qga.freezeReplyDelayMs = 4000;
          const before = await loadDiskState(state, data.id);
          await assertFails(
            backup(
              bed.source({
                guestAgent: () => qga.agent,
                quiesceOptions: { freezeTimeoutMs: 1000 },
              }),
              state,
              join(dir, "t6"),
            ),
            SourceError,
            /timed out after 1 s; the guest was thawed; no backup was taken/,
          );
          assert(!qga.frozen);
          assertEquals(await loadDiskState(state, data.id), before);
          assertEquals(await jobLeft(bed), false);
        } finally {
          qga.freezeReplyDelayMs = 0;
          await qga.stop();
        }
      },
    );

    await stepAfter(
      t,
      directFull,
      "a tunnel dropped mid-backup fails the job; the next incremental has every change",
      async () => {
        await vm.guestWrite("vda", 0x33, 10 * MiB, MiB);
        const before = await loadDiskState(state, root.id);
        let killed = false;
        const dropTunnel = async () => {
          if (killed) return;
          killed = true;
          const pids = await tunnelPids();
          assertEquals(pids.length, 1, `ssh -L children: ${pids.join(" ")}`);
          Deno.kill(pids[0], "SIGKILL");
          while ((await tunnelPids()).length > 0) {
            await delay(10);
          }
        };
        await assertFails(
          backup(bed.source(), state, join(dir, "t7"), { onWrite: dropTunnel }),
          SourceError,
          /tunnel .*dropped|NBD|read/i,
        );
        assert(killed);
        assertEquals(await loadDiskState(state, root.id), before);
        assertEquals(await jobLeft(bed), false);

        const { results, files } = await backup(bed.source(), state, join(dir, "t8"));
        const source = await snapshotSource(bed, "t8");
        assertEquals(results.map((r) => r.level), ["incremental", "incremental"]);
        assertEquals(results[0].parentId, before!.lastBackupId);
        assertEquals(results[0].stats.dirtyBytes, MiB);
        await assertRestoresTo(
          [fullFiles.get(root.id)!, files.get(root.id)!],
          source.get(root.id)!,
          dir,
        );
      },
    );

    await stepAfter(
      t,
      tunnelFull || directFull,
      "dirtybit backup --vm on the command line, --disks by guest target",
      async () => {
        const out = join(dir, "t9");
        await Deno.mkdir(out);
        /** `dirtybit backup --vm NAME ARGS` against the simulator through the test sshd. */
        const backupVm = (name: string, args: string[]) =>
          dirtybit([
            "backup",
            "--vm",
            name,
            "--url",
            sim.apiUrl,
            "--apikey",
            API_KEY,
            "--secretkey-file",
            secretFile,
            "--ssh-port",
            String(sshd.port),
            "--ssh-key",
            sshd.keyPath,
            "--known-hosts",
            sshd.knownHostsPath,
            ...args,
          ]);
        const args = [
          "--disks",
          "vdb",
          "--level",
          "full",
          "--state-dir",
          join(dir, "state-cli"),
          "--out",
          out,
          "--json",
        ];
        // The earlier steps' state directory owns the disk's chain.
        const refused = await backupVm(vm.name, args);
        assertEquals(refused.code, 4, refused.stderr);
        assertMatch(refused.stderr, /belongs to the chain of owner [0-9a-f]+ .*pass --take-over/);
        const r = await backupVm(vm.name, [...args, "--take-over"]);
        assertEquals(r.code, 0, r.stderr);
        const summary = JSON.parse(r.stdout) as { diskName: string; file: string }[];
        assertEquals(summary.map((s) => s.diskName), [data.id]);
        const source = await snapshotSource(bed, "t9");
        await assertRestoresTo([summary[0].file], source.get(data.id)!, dir);
        assert(!r.stderr.includes(SECRET));

        const bad = await backupVm("web01", ["--disks", "vdz"]);
        assertEquals(bad.code, 2, bad.stderr);
        assertMatch(bad.stderr, /disks: 'vdz' matches none/);
      },
    );

    await t.step("Bacula backend: vm= with url and keys, no qmp=", async () => {
      const cwd = join(dir, "bacula");
      await Deno.mkdir(cwd);
      const params = [
        "vm=web01",
        `url=${sim.apiUrl}`,
        `apikey=${API_KEY}`,
        `secretkey_file=${secretFile}`,
        `ssh_key=${sshd.keyPath}`,
        `ssh_port=${sshd.port}`,
        `known_hosts=${sshd.knownHostsPath}`,
        `disks=${root.id}`,
        "quiesce=false",
        // A new working directory is a new state directory: the disk was another's.
        "take_over=yes",
        `log_file=${cwd}/backend.log`,
      ];
      const { files, messages } = await backupSession(cwd, 101, "F", params);
      assertEquals(files.map((f) => f.fname), [`/@cloudstack/web01/${root.id}/full-101.dbit`]);
      const stream = join(cwd, "root.dbit");
      await Deno.writeFile(stream, files[0].data!);
      const source = await snapshotSource(bed, "t10");
      await assertRestoresTo([stream], source.get(root.id)!, dir);
      assert(messages.some((m) => m.includes("full backup")), messages.join("\n"));
    });

    await t.step(
      "a Stopped VM: its volumes read on primary storage through the KVM host, incremental",
      async () => {
        const stopped = join(dir, "state-stopped");
        const first = await backup(bed.source(), stopped, join(dir, "s1"), { takeOver: true });
        assertEquals(first.results.map((r) => r.level), ["full", "full"]);
        const chains = new Map(vm.volumes.map((v) => [v.id, [first.files.get(v.id)!]]));
        await vm.guestWrite("vda", 0x61, 2 * MiB, 256 << 10);
        // As CloudStack's agent stops a VM: the domain goes, the images stay.
        await run("virsh", ["-c", "qemu:///system", "destroy", vm.name]);
        await run("virsh", ["-c", "qemu:///system", "undefine", vm.name, "--checkpoints-metadata"]);
        sim.scenario.vms![0].state = "Stopped";
        for (const [round, offset] of [[1, 6 * MiB], [2, 9 * MiB]]) {
          await run("qemu-io", [
            "-f",
            "qcow2",
            "-c",
            `write -P 0x7${round} ${offset} 128k`,
            data.file,
          ]);
          const { results, files } = await backup(
            bed.source(),
            stopped,
            join(dir, `s${round + 1}`),
          );
          const source = await snapshotImages(bed, `s${round + 1}`);
          assertEquals(results.map((r) => r.level), ["incremental", "incremental"]);
          assertEquals(results[1].stats.dirtyBytes, 128 << 10);
          assertEquals(results[0].stats.dirtyBytes, round === 1 ? 256 << 10 : 0);
          for (const v of vm.volumes) {
            chains.get(v.id)!.push(files.get(v.id)!);
            await assertRestoresTo(chains.get(v.id)!, source.get(v.id)!, dir);
          }
        }
        const bitmaps = JSON.parse(await run("qemu-img", ["info", "--output=json", data.file]))[
          "format-specific"
        ].data.bitmaps.map((b: { name: string }) => b.name);
        const owner = await ownerId(stopped);
        assert(
          bitmaps.every((b: string) => b.startsWith(`dirtybit-${owner}-`)),
          `only the chain's bitmaps are left: ${bitmaps}`,
        );

        // Started again, as CloudStack does: a new domain that knows no checkpoint.
        await run("virsh", ["-c", "qemu:///system", "define", join(vm.poolDir, "domain.xml")]);
        await run("virsh", ["-c", "qemu:///system", "start", vm.name]);
        sim.scenario.vms![0].state = "Running";
        await vm.guestWrite("vdb", 0x7e, 3 * MiB, 64 << 10);
        const { results, files, warnings } = await backup(bed.source(), stopped, join(dir, "s4"));
        const source = await snapshotSource(bed, "s4");
        assertEquals(results.map((r) => r.level), ["incremental", "incremental"]);
        assertEquals(results[1].stats.dirtyBytes, 64 << 10);
        assert(warnings.some((w) => /known to libvirt again/.test(w)), warnings.join("\n"));
        for (const v of vm.volumes) {
          chains.get(v.id)!.push(files.get(v.id)!);
          await assertRestoresTo(chains.get(v.id)!, source.get(v.id)!, dir);
        }
        const history = (await loadDiskState(stopped, data.id))!.history;
        assertEquals(
          await checkpointList(bed),
          history.map((h) => `dirtybit-${owner}-${h.backupId}`),
        );
      },
    );
  } finally {
    await sim.close();
    await sshd.stop();
    await vm.destroy();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
