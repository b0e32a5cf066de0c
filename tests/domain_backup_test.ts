/**
 * `dirtybit backup --domain`, end to end against a real libvirtd (TCG, no
 * guest OS; tests/fixtures/libvirt.ts): one domain with two qcow2 disks and a
 * raw one, backed up running (libvirt's pull backup and checkpoints), shut
 * off (qemu-nbd on the images, here and over qemu+ssh) and running again,
 * across a libvirtd restart;
 * every point restored and compared with the image as it was (qemu-img
 * compare), libvirt's checkpoints compared with the chain, and the restored
 * domain defined and started.
 *
 * The image at a running point is copied with `qemu-img convert -U` after the
 * fixture's guest write flushed it; guest writes on a stopped domain are
 * `qemu-io` on the image.
 */
import {
  deepStrictEqual as assertEquals,
  match as assertMatch,
  ok as assert,
} from "node:assert/strict";
import { join } from "node:path";
import {
  restartLibvirtd,
  startTestDomain,
  type TestDomain,
  undefineDomain,
} from "./fixtures/libvirt.ts";
import {
  assertOneLineError,
  cliCommand,
  dirtybit,
  dirtybitJson,
  dirtybitOk,
} from "./fixtures/cli.ts";
import { killWhen } from "./fixtures/kills.ts";
import { startSshd } from "./fixtures/sshd.ts";
import { backupSession, estimateSession } from "./ptcomm/sessions.ts";
import { openStreamFile } from "../lib/stream/reader.ts";
import { run } from "./helpers.ts";
import { loadDiskState, ownerId } from "../lib/model/disk_state.ts";
import { domainStateDir } from "../lib/backup/domain_job.ts";

const MiB = 1 << 20;

interface Result {
  diskName: string;
  level: string;
  fallback?: string;
  backupId: string;
  file: string;
}

/** One backup point: the streams and a copy of each disk as it was. */
interface Point {
  results: Result[];
  copies: Map<string, string>;
}

async function snapshot(dom: TestDomain, dir: string, label: string): Promise<Map<string, string>> {
  const copies = new Map<string, string>();
  for (const d of dom.disks) {
    const copy = join(dir, `${label}-${d.target}.raw`);
    await run("qemu-img", ["convert", "-U", "-f", d.format, "-O", "raw", d.file, copy]);
    copies.set(d.target, copy);
  }
  return copies;
}

async function compare(image: string, raw: string): Promise<void> {
  const out = await new Deno.Command("qemu-img", {
    args: ["compare", "-F", "raw", image, raw],
    stdin: "null",
  }).output();
  assertEquals(
    out.code,
    0,
    `qemu-img compare ${image} ${raw}: ${new TextDecoder().decode(out.stdout)}`,
  );
}

Deno.test("backup --domain: running, shut off, running again; restore --define", async (t) => {
  const name = `h5-dom-${Deno.pid}`;
  const dom = await startTestDomain({
    name,
    disks: [
      { target: "vda", format: "qcow2", size: 48 * MiB },
      { target: "vdb", format: "qcow2", size: 32 * MiB },
      { target: "vdc", format: "raw", size: 16 * MiB },
    ],
  });
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-domtest-" });
  await Deno.chmod(dir, 0o755); // QEMU reaches the scratch directory inside
  const stateRoot = join(dir, "state");
  const out = join(dir, "out");
  await Deno.mkdir(out);
  const scratch = join(dir, "scratch");
  const restoredName = `${name}-r`;
  const backupArgs = (...extra: string[]) => [
    "backup",
    "--domain",
    name,
    "--state-dir",
    stateRoot,
    "--out",
    out,
    "--scratch-dir",
    scratch,
    "--compress",
    "none",
    ...extra,
  ];
  const backup = (...extra: string[]) => dirtybitJson<Result[]>(backupArgs(...extra));
  const points: Point[] = [];
  const byDisk = (p: Point, disk: string) => p.results.find((r) => r.diskName === disk)!;
  /** The streams that restore `disk` at point `i`: from its last full on. */
  const chainOf = (disk: string, i: number) => {
    let from = i;
    while (byDisk(points[from], disk).level !== "full") from--;
    return points.slice(from, i + 1).map((p) => byDisk(p, disk).file);
  };
  /** A backup of every disk with these levels, and the disks copied as they were. */
  const takePoint = async (levels: string[], extra: string[] = []) => {
    const results = await backup(...extra);
    assertEquals(results.map((r) => [r.diskName, r.level]), [
      ["vda", levels[0]],
      ["vdb", levels[1]],
      ["vdc", "full"],
    ]);
    points.push({ results, copies: await snapshot(dom, dir, `p${points.length}`) });
    return results;
  };
  try {
    await t.step("full of the running domain, without tainting it", async () => {
      const results = await takePoint(["full", "full"]);
      assertMatch(results[2].fallback!, /raw image/);
      const log = await Deno.readTextFile(`/var/log/libvirt/qemu/${name}.log`);
      assert(!/is tainted/.test(log), `domain log shows a taint:\n${log}`);
    });

    await t.step("incremental after guest writes on both qcow2 disks", async () => {
      await dom.guestWrite("vda", 0xa1, 1 * MiB, 256 * 1024);
      await dom.guestWrite("vdb", 0xb1, 5 * MiB, 64 * 1024);
      await dom.guestWrite("vdc", 0xc1, 0, 64 * 1024);
      await takePoint(["incremental", "incremental"]);
    });

    await t.step("shut off: offline incremental from the images' bitmaps", async () => {
      await dom.virsh(["destroy", name]);
      await run("qemu-io", ["-f", "qcow2", "-c", "write -P 0xa2 8M 128k", dom.disks[0].file]);
      await run("qemu-io", ["-f", "qcow2", "-c", "write -P 0xb2 0 64k", dom.disks[1].file]);
      await takePoint(["incremental", "incremental"]);
      assertEquals((await dom.virsh(["domstate", name])).trim(), "shut off");
    });

    await t.step("running again, across a libvirtd restart: the chain goes on", async () => {
      await dom.virsh(["start", name]);
      await restartLibvirtd();
      await dom.guestWrite("vda", 0xa3, 20 * MiB, 64 * 1024);
      await takePoint(["incremental", "incremental"]);
    });

    await t.step("a backup killed mid-job: the next plain run cleans up and goes on", async () => {
      await dom.guestWrite("vdb", 0xb4, 9 * MiB, 64 * 1024);
      const child = cliCommand(backupArgs(), { stdout: "null", stderr: "null" }).spawn();
      await killWhen(child, "a stream being written", async () => {
        for await (const e of Deno.readDir(out)) if (e.name.endsWith(".partial")) return true;
        return false;
      });
      await takePoint(["incremental", "incremental"]);
      assertEquals(await Array.fromAsync(Deno.readDir(scratch)), [], "no scratch dir is left");
      assert(
        !(await Array.fromAsync(Deno.readDir(out))).some((e) => e.name.endsWith(".partial")),
        "no partial stream is left",
      );
    });

    await t.step(
      "the Bacula backend takes domain=: a Full job, then an Incremental on it",
      async () => {
        const cwd = join(dir, "fd");
        await Deno.mkdir(cwd);
        // Bacula's first Incremental has no base job the backend finished: a full.
        for (
          const [jobId, level, expected] of [[301, "F", "full"], [302, "I", "incremental"]] as const
        ) {
          await dom.guestWrite("vda", 0xa5, (30 + jobId % 2) * MiB, 64 * 1024);
          const { files } = await backupSession(cwd, jobId, level, [
            `domain=${name}`,
            `state_dir=${stateRoot}`,
            `scratch_dir=${scratch}`,
            "compress=none",
            `log_file=${cwd}/backend.log`,
          ]);
          assertEquals(files.map((f) => f.fname), [
            `/@cloudstack/${name}/vda/${expected}-${jobId}.dbit`,
            `/@cloudstack/${name}/vdb/${expected}-${jobId}.dbit`,
            `/@cloudstack/${name}/vdc/full-${jobId}.dbit`,
          ]);
          // The estimate lists each disk at its virtual size.
          const estimate = await estimateSession(cwd, level, [
            `domain=${name}`,
            `state_dir=${stateRoot}`,
          ]);
          for (const [i, d] of dom.disks.entries()) {
            assert(
              estimate[i].attrs.some((a) => a.startsWith(`STAT:F ${d.size} `)),
              `${d.target}: ${estimate[i].attrs.join("\n")}`,
            );
          }
          const results: Result[] = [];
          for (const [i, f] of files.entries()) {
            const file = join(out, `ptcomm-${jobId}-${i}.dbit`);
            await Deno.writeFile(file, f.data!);
            const reader = await openStreamFile(file);
            for await (const _ of reader.records()) { /* verified to its end, and closed */ }
            const { disk, level, backupId } = reader.header;
            results.push({ diskName: disk, level, backupId, file });
          }
          points.push({ results, copies: await snapshot(dom, dir, `p${points.length}`) });
        }
      },
    );

    await t.step(
      "remote through qemu+ssh:// to the loopback sshd, running and shut off: the same chain",
      async () => {
        await dom.guestWrite("vdb", 0xb6, 12 * MiB, 128 * 1024);
        const sshd = await startSshd();
        const remote = [
          "--connect",
          `qemu+ssh://${sshd.user}@127.0.0.1:${sshd.port}/system`,
          "--ssh-key",
          sshd.keyPath,
          "--known-hosts",
          sshd.knownHostsPath,
        ];
        try {
          await takePoint(["incremental", "incremental"], remote);
          // Shut off: qemu-nbd on the host over SSH, the data through the tunnel.
          await dom.virsh(["destroy", name]);
          await run("qemu-io", ["-f", "qcow2", "-c", "write -P 0xa7 40M 192k", dom.disks[0].file]);
          await takePoint(["incremental", "incremental"], remote);
          assertEquals((await dom.virsh(["domstate", name])).trim(), "shut off");
          const left = await Array.fromAsync(Deno.readDir("/tmp"));
          assertEquals(
            left.filter((e) =>
              e.name.startsWith("dirtybit-qemu-nbd-") && e.isDirectory &&
              /^dirtybit-qemu-nbd-[0-9a-f]{8}$/.test(e.name)
            ),
            [],
            "no remote qemu-nbd directory is left",
          );
        } finally {
          await sshd.stop();
        }
        await dom.virsh(["start", name]);
      },
    );

    await t.step("libvirt's checkpoints are the chain's", async () => {
      const uuid = (await dom.virsh(["domuuid", name])).trim();
      const state = await loadDiskState(domainStateDir(stateRoot, uuid), "vda");
      const owner = await ownerId(domainStateDir(stateRoot, uuid));
      const listed = (await dom.virsh(["checkpoint-list", name, "--name", "--topological"]))
        .split("\n").map((l) => l.trim()).filter(Boolean);
      assertEquals(listed, state!.history.map((h) => `dirtybit-${owner}-${h.backupId}`));
      assertEquals(listed.length, 4, "the Bacula Full job started the chain again");
      // A --domain backup records its stream file as a --qmp one does; PTCOMM writes none.
      assertEquals(state!.history.map((h) => h.stream), [
        undefined,
        undefined,
        ...points.slice(-2).map((p) => byDisk(p, "vda").file),
      ]);
    });

    await t.step("every point restores to the disk as it was", async () => {
      for (const disk of ["vda", "vdb", "vdc"]) {
        for (const [i, point] of points.entries()) {
          const target = join(dir, `restore-${disk}-${i}.qcow2`);
          const chain = chainOf(disk, i);
          await dirtybitOk(["restore", "--out", target, ...chain]);
          await compare(target, point.copies.get(disk)!);
          await Deno.remove(target);
        }
      }
    });

    await t.step("restore --define: a new domain on the restored disks starts", async () => {
      const last = points.length - 1;
      const streams = ["vda", "vdb"].flatMap((disk) => chainOf(disk, last))
        .concat(byDisk(points[last], "vdc").file);
      const restoreDir = join(dir, "defined");
      await dirtybitOk([
        "restore",
        "--define",
        "--name",
        restoredName,
        "--out",
        restoreDir,
        ...streams,
      ]);
      const xml = await dom.virsh(["dumpxml", restoredName, "--inactive"]);
      const uuid = (await dom.virsh(["domuuid", restoredName])).trim();
      assert(uuid !== (await dom.virsh(["domuuid", name])).trim(), "the copy has a new UUID");
      assert(!xml.includes("52:54:00:db:00:01"), "the copy has a new MAC");
      for (const disk of ["vda", "vdb", "vdc"]) {
        const file = join(restoreDir, `${restoredName}-${disk}.qcow2`);
        assert(xml.includes(`<source file='${file}'/>`), `${disk} uses ${file}:\n${xml}`);
        await compare(file, points[last].copies.get(disk)!);
      }
      assert(!xml.includes(dom.dir), "the copy uses none of the original's images");
      await dom.virsh(["start", restoredName]);
      assertEquals((await dom.virsh(["domstate", restoredName])).trim(), "running");
    });

    await t.step(
      "bad input: one line each; a lost checkpoint gives a full with the reason",
      async () => {
        const unknown = await dirtybit([
          "backup",
          "--domain",
          `${name}-nope`,
          "--state-dir",
          stateRoot,
          "--out",
          out,
        ]);
        assertOneLineError(unknown, 5, "is not defined");
        const usage = await dirtybit([
          "backup",
          "--domain",
          name,
          "--disk",
          "vdz",
          "--state-dir",
          stateRoot,
          "--out",
          out,
        ]);
        assertOneLineError(usage, 2, "no such disk");
        const latest = byDisk(points.at(-1)!, "vda").backupId;
        const owner = await ownerId(
          domainStateDir(stateRoot, (await dom.virsh(["domuuid", name])).trim()),
        );
        // Bitmaps and all: with its bitmaps left in the images it would be taken back.
        await dom.virsh(["checkpoint-delete", name, `dirtybit-${owner}-${latest}`]);
        const results = await backup("--disk", "vda");
        assertEquals(results.map((r) => [r.diskName, r.level]), [["vda", "full"]]);
        assertMatch(results[0].fallback!, /libvirt has no checkpoint dirtybit-/);
      },
    );
  } finally {
    await undefineDomain(restoredName);
    await dom.remove();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
