/**
 * Restores through the PTCOMM backend with the real engine: in place back
 * onto a live qemu-storage-daemon disk (exported writable over QMP), a
 * cross-restore to a Proxmox node that is a loopback sshd with a fake `qm`,
 * and concurrent backups of two VMs with the default per-VM state directory.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Qsd } from "./fixtures/qsd.ts";
import { backupSession, qsdParams, restoreSession } from "./ptcomm/sessions.ts";
import { withDir } from "./helpers.ts";
import { startFakeHost } from "./crossrestore/fake_host.ts";
import { parseProperties, parseProxmoxConf } from "./crossrestore/parse.ts";
import { assertSameDisk } from "./crossrestore/streams.ts";
import { delay } from "../lib/core/async.ts";
import { dirname } from "node:path";
import { startServe } from "../lib/serve/mod.ts";

/** Serves `streams` on a socket beside the first one. */
async function serveChain(streams: string[]) {
  return await startServe(streams, { socket: `${dirname(streams[0])}/serve.sock` });
}

const MiB = 1 << 20;

/** A live disk with a Full and an Incremental backup through the backend; `snapshot` = the disk then. */
async function backedUpDisk(dir: string, qsd: Qsd, params: string[]) {
  const full = await backupSession(dir, 21, "F", params);
  await qsd.guestWrite(0, 0x52, 5 * MiB, 512 << 10);
  await qsd.guestWriteZeroes(0, 0, 64 << 10);
  const incr = await backupSession(dir, 22, "I", params);
  assert.match(incr.files[0].fname, /\/incremental-22\.dbit$/);
  const snapshot = `${dir}/snapshot.raw`;
  await qsd.snapshotImage(0, snapshot);
  return { files: [...full.files, ...incr.files], snapshot };
}

async function startDisk(): Promise<Qsd> {
  return await Qsd.start({
    disks: [{
      size: 16 * MiB,
      writes: [
        { pattern: 0x51, offset: 0, length: 3 * MiB },
        { pattern: 0x53, offset: 12 * MiB, length: MiB },
      ],
    }],
  });
}

Deno.test("in-place restore onto the VM's disk: chain applied over NBD, next backup forced to full", async () => {
  await withDir(async (dir) => {
    const qsd = await startDisk();
    try {
      const node = qsd.disks[0].node;
      // No state_dir: the backend's per-VM default under the working directory.
      const p = qsdParams(qsd, "vm1", dir);
      const { files, snapshot } = await backedUpDisk(dir, qsd, p);
      await Deno.stat(`${dir}/dirtybit/vm1/${node}/state.json`);
      // Scribble over the disk: allocated and unallocated areas alike.
      await qsd.guestWrite(0, 0xee, 0, 2 * MiB);
      await qsd.guestWrite(0, 0xef, 8 * MiB, 3 * MiB);

      const refused = await restoreSession(dir, "", p, files);
      assert.match(refused.answers[0], /^Q:.*guest_stopped=true/);

      const done = await restoreSession(dir, "", [...p, "guest_stopped=true"], files);
      assert.deepEqual(done.answers, ["OK", "OK"], done.messages.join("\n"));
      assert.ok(
        done.messages.some((m) =>
          m.startsWith("W: ") && m.includes("next backup of disk0 will be a full")
        ),
        done.messages.join("\n"),
      );
      const restored = `${dir}/restored.raw`;
      await qsd.snapshotImage(0, restored);
      await assertSameDisk(restored, "raw", snapshot);

      // The chain was reset: an Incremental job falls back to full, saying why.
      const next = await backupSession(dir, 23, "I", p);
      assert.match(next.files[0].fname, /\/full-23\.dbit$/);
      assert.equal(
        next.messages.filter((m) => m.startsWith("W: ") && m.includes("no previous")).length,
        1,
        `once: ${next.messages.join("\n")}`,
      );
      // The applied-chain record refuses an incremental of the old chain now.
      const stale = await restoreSession(dir, "", [...p, "guest_stopped=true"], [files[1]]);
      assert.match(stale.answers[0], /^Q:/);
      // The export is gone: QSD lists only its own guest export.
      const qmp = await qsd.qmp();
      try {
        const exports = await qmp.execute<{ id: string }[]>("query-block-exports");
        assert.deepEqual(exports.map((e) => e.id), ["vm"]);
      } finally {
        await qmp.close();
      }
    } finally {
      await qsd.stop();
    }
  });
});

Deno.test("restore_as=streams: the job's stream files as they are, with their index, ready for serve", async () => {
  await withDir(async (dir) => {
    const qsd = await startDisk();
    try {
      const p = qsdParams(qsd, "vm1", dir);
      const { files, snapshot } = await backedUpDisk(dir, qsd, p);
      const where = `${dir}/r`;
      const r = await restoreSession(dir, where, [...p, "restore_as=streams"], files);
      assert.deepEqual(r.answers, ["OK", "OK"], r.messages.join("\n"));
      const written = files.map((f) => `${where}${f.fname}`);
      for (const [i, f] of files.entries()) {
        assert.deepEqual(await Deno.readFile(written[i]), f.data, "the stream as it was backed up");
        await Deno.stat(`${written[i]}.idx`);
      }
      assert.ok(
        r.messages.some((m) => /^I: written full \S+ to .*full-21\.dbit/.test(m)),
        r.messages.join("\n"),
      );
      const listing = [...Deno.readDirSync(dirname(written[0]))].map((e) => e.name).sort();
      assert.deepEqual(listing, [
        "full-21.dbit",
        "full-21.dbit.idx",
        "incremental-22.dbit",
        "incremental-22.dbit.idx",
      ]);
      const served = await serveChain(written);
      try {
        await assertSameDisk(served.uri, "raw", snapshot);
      } finally {
        await served.close();
      }

      // An incremental alone is refused (its full is not in the job), and nothing is left.
      const alone = await restoreSession(dir, `${dir}/r2`, [...p, "restore_as=streams"], [
        files[1],
      ]);
      assert.match(alone.answers[0], /^Q:.*cannot start a restore/);
      const left = `${dir}/r2${files[1].fname}`;
      assert.ok(!(await Deno.stat(left).catch(() => null)), "no stream file");
      assert.ok(!(await Deno.stat(`${left}.partial`).catch(() => null)), "no partial file");
      // In place there is no directory to write them to.
      const inPlace = await restoreSession(dir, "", [...p, "restore_as=streams"], files);
      assert.match(
        inPlace.answers[0],
        /^Q:.*restore_as=streams writes stream files: give where=DIR/,
      );
    } finally {
      await qsd.stop();
    }
  });
});

Deno.test("cross_restore=proxmox: the job's streams are staged, pushed at FINISH, and removed", async () => {
  await withDir(async (dir) => {
    const qsd = await startDisk();
    const host = await startFakeHost();
    try {
      const p = qsdParams(qsd, "vm1", dir);
      const { files, snapshot } = await backedUpDisk(dir, qsd, p);
      const pve = `${dir}/pve`;
      await Deno.mkdir(`${pve}/etc/pve/qemu-server`, { recursive: true });
      const staging = `${dir}/staging`;
      const cross = [
        ...p,
        "cross_restore=proxmox",
        `dest=${host.url(pve)}`,
        `dest_ssh_key=${host.sshd.keyPath}`,
        `dest_known_hosts=${host.sshd.knownHostsPath}`,
        "register=true",
        "vmid=120",
        `staging_dir=${staging}`,
      ];
      const r = await restoreSession(dir, `${dir}/r`, cross, files);
      assert.deepEqual(r.answers, ["OK", "OK"], r.messages.join("\n"));
      assert.ok(
        r.messages.some((m) => /^I: cross_restore=proxmox: VM .* restored/.test(m)),
        r.messages.join("\n"),
      );
      await assertSameDisk(`${pve}/var/lib/vz/images/120/vm-120-disk-0.qcow2`, "qcow2", snapshot);
      const conf = parseProxmoxConf(await Deno.readTextFile(`${pve}/etc/pve/qemu-server/120.conf`));
      assert.equal(parseProperties(conf.get("virtio0")!).first, "local:120/vm-120-disk-0.qcow2");
      assert.deepEqual(await host.calls(), ["qm rescan --vmid 120", "qm config 120"]);
      assert.deepEqual([...Deno.readDirSync(staging)], []);

      // An incomplete chain is not pushed: the job fails with A and stages nothing.
      const gap = await restoreSession(dir, `${dir}/r`, [
        ...cross.slice(0, -2),
        "vmid=121",
        `staging_dir=${staging}`,
      ], [files[1]]);
      assert.match(gap.answers.at(-1)!, /^A:.*cross_restore=proxmox/);
      assert.ok(!(await Deno.stat(`${pve}/etc/pve/qemu-server/121.conf`).catch(() => null)));
      assert.deepEqual([...Deno.readDirSync(staging)], []);
    } finally {
      await host.stop();
      await qsd.stop();
    }
  });
});

Deno.test("cross_restore parameters are checked before any data: missing dest, wrong target's option", async () => {
  await withDir(async (dir) => {
    const p = ["vm=vm1", `log_file=${dir}/backend.log`, "cross_restore=hyperv"];
    const noDest = await restoreSession(dir, `${dir}/r`, p, []).catch((e) => e);
    assert.match(String(noDest), /needs dest=ssh/);
    const wrong = await restoreSession(dir, `${dir}/r`, [...p, `dest=${dir}/out`, "vmid=5"], [])
      .catch((e) => e);
    assert.match(String(wrong), /vmid applies to cross_restore=proxmox only/);
    const stray = await restoreSession(dir, `${dir}/r`, ["vm=vm1", `dest=${dir}/out`], [])
      .catch((e) => e);
    assert.match(String(stray), /dest applies to cross_restore/);
  });
});

Deno.test("default state directories are per VM: backups of two VMs run at the same time", async () => {
  await withDir(async (dir) => {
    const a = await Qsd.start({ disks: [{ size: 4 * MiB }] });
    const b = await Qsd.start({ disks: [{ size: 4 * MiB }] });
    try {
      const [ra, rb] = await Promise.all([
        backupSession(dir, 31, "F", qsdParams(a, "web01", dir)),
        backupSession(dir, 32, "F", qsdParams(b, "db01", dir)),
      ]);
      assert.equal(ra.files.length, 1);
      assert.equal(rb.files.length, 1);
      await Deno.stat(`${dir}/dirtybit/web01/disk0/state.json`);
      await Deno.stat(`${dir}/dirtybit/db01/disk0/state.json`);
    } finally {
      await a.stop();
      await b.stop();
    }
  });
});

Deno.test("in-place restore onto a disk a running guest device holds: QEMU's refusal is a clear error", async () => {
  await withDir(async (dir) => {
    await new Deno.Command("qemu-img", {
      args: ["create", "-q", "-f", "qcow2", `${dir}/vm.qcow2`, String(4 * MiB)],
    }).output();
    const qmp = `${dir}/vm.qmp`;
    const vm = new Deno.Command("qemu-system-x86_64", {
      args: [
        ...["-accel", "tcg", "-m", "32", "-nodefaults", "-display", "none", "-serial", "none"],
        ...["-blockdev", `driver=file,node-name=f0,filename=${dir}/vm.qcow2`],
        ...["-blockdev", "driver=qcow2,node-name=disk0,file=f0"],
        ...[
          "-device",
          "virtio-blk-pci,drive=disk0,id=vda",
          "-qmp",
          `unix:${qmp},server=on,wait=off`,
        ],
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      for (let i = 0; i < 100 && !(await Deno.stat(qmp).catch(() => null)); i++) {
        await delay(100);
      }
      const p = ["vm=tcg1", `qmp=${qmp}`, "node=disk0", `log_file=${dir}/backend.log`];
      const full = await backupSession(dir, 41, "F", p);
      const r = await restoreSession(dir, "", [...p, "guest_stopped=true"], full.files);
      assert.match(r.answers[0], /^Q:.*attached to a running guest device/);
    } finally {
      vm.kill("SIGKILL");
      await vm.status;
    }
  });
});
