/**
 * `dirtybit mount` / `umount` on a chain backed up from a qemu-storage-daemon
 * disk holding a partition table and an ext4 file system with known files:
 * the files read back through nbdfuse, a loop device and a read-only mount;
 * umount, SIGTERM and the run after a kill -9 leave no mount, loop device or
 * FUSE mount behind.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Qsd } from "./fixtures/qsd.ts";
import { run } from "./helpers.ts";
import { exists } from "../lib/core/files.ts";
import { assertOneLineError, backupCli, cliCommand, dirtybit, dirtybitOk } from "./fixtures/cli.ts";
import { waitFor } from "./fixtures/kills.ts";
import { parseLoops, parseMounts } from "../lib/mount/mount_plan.ts";
import { STATE_FILE } from "../lib/mount/mount.ts";
import { alive, processInfo } from "../lib/core/process.ts";

const MiB = 1 << 20;
const SIZE = 24 * MiB;

/** A raw disk: a dos table, p1 an ext4 file system made from `files`, p2 a damaged one, p3 empty. */
async function makeDisk(path: string, files: Record<string, string>): Promise<void> {
  const src = `${path}.src`;
  await Deno.mkdir(join(src, "sub"), { recursive: true });
  for (const [name, text] of Object.entries(files)) await Deno.writeTextFile(join(src, name), text);
  await run("truncate", ["-s", String(SIZE), path]);
  const sfdisk = new Deno.Command("sfdisk", { args: ["-q", path], stdin: "piped", stdout: "null" })
    .spawn();
  const w = sfdisk.stdin.getWriter();
  await w.write(new TextEncoder().encode("label: dos\n2048,12M,L\n,4M,L\n,,L\n"));
  await w.close();
  assert.ok((await sfdisk.status).success, "sfdisk");
  await run("mkfs.ext4", ["-q", "-F", "-d", src, "-E", `offset=${MiB}`, path, "12M"]);
  // p2: an ext4 file system whose group descriptors are overwritten, which mount refuses.
  await run("mkfs.ext4", ["-q", "-F", "-E", `offset=${13 * MiB}`, path, "4M"]);
  const file = await Deno.open(path, { write: true });
  await file.seek(13 * MiB + 2048, Deno.SeekMode.Start);
  await file.write(new Uint8Array(6144).fill(0xff));
  file.close();
  await Deno.remove(src, { recursive: true });
}

/** Mount points under `dir` and loop devices of files under it, as the kernel lists them. */
async function leftUnder(dir: string): Promise<string[]> {
  const mounts = parseMounts(await Deno.readTextFile("/proc/self/mounts"))
    .filter((m) => m.target.startsWith(dir)).map((m) => `mount ${m.target}`);
  const loops = parseLoops(await run("losetup", ["-l", "-n", "--raw", "-O", "NAME,BACK-FILE"]))
    .filter((l) => l.backFile.startsWith(dir)).map((l) => `loop ${l.device} ${l.backFile}`);
  return [...mounts, ...loops];
}

/** `dirtybit mount STREAMS DIR` in the background, once it says DIR is mounted. */
async function startMount(streams: string[], dir: string) {
  const child = cliCommand(["mount", ...streams, dir], { stdout: "null" }).spawn();
  let stderr = "";
  const reading = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of child.stderr) stderr += decoder.decode(chunk);
  })();
  let ended = false;
  child.status.then(() => ended = true);
  await waitFor("the mount", 60_000, () => ended || stderr.includes("is mounted"));
  assert.ok(!ended, `mount ended: ${stderr}`);
  return { child, stderr: () => stderr, done: reading };
}

Deno.test("mount: files of a backed-up ext4 partition, umount, SIGTERM, kill -9", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "dirtybit-mount-test-" });
  const at = (name: string) => join(tmp, name);
  const v1 = { "a.txt": "first version\n", "sub/b.txt": "kept\n" };
  const v2 = { "a.txt": "second version\n", "sub/b.txt": "kept\n", "c.txt": "new\n" };
  let qsd: Qsd | undefined;
  const dir = at("mnt");
  try {
    await makeDisk(at("v1.raw"), v1);
    await makeDisk(at("v2.raw"), v2);
    await run("truncate", ["-s", String(8 * MiB), at("whole.raw")]);
    await Deno.mkdir(at("whole.src"));
    await Deno.writeTextFile(at("whole.src/w.txt"), "whole disk\n");
    await run("mkfs.ext4", ["-q", "-F", "-d", at("whole.src"), at("whole.raw")]);
    qsd = await Qsd.start({ disks: [{ size: SIZE }, { size: 8 * MiB }] });
    await Deno.mkdir(dir);
    await qsd.guestPwrite(0, await Deno.readFile(at("v1.raw")), 0);
    const source = ["--qmp", qsd.qmpSocket, "--nbd-socket", qsd.nbdSocket, "--node", "disk0"];
    assert.equal((await backupCli(source, at("state"), at("s0.dbit"))).code, 0);
    await qsd.guestPwrite(0, await Deno.readFile(at("v2.raw")), 0);
    assert.equal((await backupCli(source, at("state"), at("s1.dbit"))).code, 0);
    const chain = [at("s0.dbit"), at("s1.dbit")];
    await qsd.guestPwrite(1, await Deno.readFile(at("whole.raw")), 0);
    const wholeSource = ["--qmp", qsd.qmpSocket, "--nbd-socket", qsd.nbdSocket, "--node", "disk1"];
    assert.equal((await backupCli(wholeSource, at("state"), at("w0.dbit"))).code, 0);

    await t.step("mount shows the files of the last backup; umount undoes it all", async () => {
      const m = await startMount(chain, dir);
      for (const [name, text] of Object.entries(v2)) {
        assert.equal(await Deno.readTextFile(join(dir, "p1", name)), text, name);
      }
      assert.match(m.stderr(), /p2: skipped: mount .*Structure needs cleaning/);
      assert.match(m.stderr(), /p3: skipped: no file system/);
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
        ".dirtybit-mount",
        ".dirtybit-mount.json",
        "p1",
      ]);
      // nbdfuse runs in a session of its own (a terminal's Ctrl-C must reach mount only).
      const state = JSON.parse(await Deno.readTextFile(join(dir, STATE_FILE)));
      const session = async (pid: number) =>
        (await Deno.readTextFile(`/proc/${pid}/stat`)).split(") ")[1].split(" ")[3];
      assert.match((await processInfo(state.nbdfuse.pid))!.argv[0], /nbdfuse$/);
      assert.notEqual(await session(state.nbdfuse.pid), await session(m.child.pid));
      await assert.rejects(Deno.writeTextFile(join(dir, "p1", "x"), "x"), "read-only");
      await dirtybitOk(["umount", dir]);
      assert.equal((await m.child.status).code, 0, m.stderr());
      await m.done;
      assert.deepEqual(await leftUnder(dir), []);
      assert.deepEqual([...Deno.readDirSync(dir)], [], "DIR is left as it was");
    });

    await t.step("a DIR deeper than a Unix socket path can be", async () => {
      const deep = join(tmp, "deep-" + "x".repeat(150 - tmp.length - 6));
      assert.ok(deep.length >= 150, deep);
      await Deno.mkdir(deep);
      const m = await startMount(chain, deep);
      assert.equal(await Deno.readTextFile(join(deep, "p1", "c.txt")), v2["c.txt"]);
      // The server's socket is in a short private directory of dirtybit's, recorded in the state.
      const { socketDir } = JSON.parse(await Deno.readTextFile(join(deep, STATE_FILE)));
      assert.match(socketDir, /\/dirtybit-mount-[0-9a-f]+$/);
      assert.equal((await Deno.stat(socketDir)).mode! & 0o777, 0o700);
      assert.ok((await Deno.lstat(join(socketDir, "nbd.sock"))).isSocket);
      await dirtybitOk(["umount", deep]);
      assert.equal((await m.child.status).code, 0, m.stderr());
      await m.done;
      assert.deepEqual(await leftUnder(deep), []);
      assert.deepEqual([...Deno.readDirSync(deep)], []);
      assert.ok(!await exists(socketDir), "umount removes the socket's directory");
      await Deno.remove(deep);
    });

    await t.step("bad input: one-line errors, nothing left", async () => {
      assertOneLineError(await dirtybit(["mount", dir]), 2, "name the STREAMs");
      assertOneLineError(await dirtybit(["mount", chain[0], at("none")]), 2, "not a directory");
      assertOneLineError(await dirtybit(["umount", dir]), 2, "not mounted by dirtybit");
      const wrong = await dirtybit(["mount", chain[1], chain[0], dir]);
      assert.notEqual(wrong.code, 0);
      assertOneLineError(wrong, wrong.code);
      assert.deepEqual(await leftUnder(dir), []);
      assert.deepEqual([...Deno.readDirSync(dir)], [], "no state file is left");
    });

    await t.step("a disk without a partition table is mounted whole", async () => {
      const m = await startMount([at("w0.dbit")], dir);
      assert.equal(await Deno.readTextFile(join(dir, "disk", "w.txt")), "whole disk\n");
      await dirtybitOk(["umount", dir]);
      assert.equal((await m.child.status).code, 0, m.stderr());
      await m.done;
      assert.deepEqual(await leftUnder(dir), []);
    });

    await t.step("SIGTERM of mount undoes it", async () => {
      const m = await startMount([chain[0]], dir);
      assert.equal(await Deno.readTextFile(join(dir, "p1", "a.txt")), v1["a.txt"]);
      m.child.kill("SIGTERM");
      assert.equal((await m.child.status).code, 0, m.stderr());
      await m.done;
      assert.deepEqual(await leftUnder(dir), []);
    });

    await t.step("after kill -9, umount and the next mount clean up", async () => {
      const m = await startMount(chain, dir);
      const { nbdfuse, socketDir } = JSON.parse(await Deno.readTextFile(join(dir, STATE_FILE)));
      m.child.kill("SIGKILL");
      await m.child.status;
      await m.done;
      await waitFor("nbdfuse to die with mount", 10_000, async () => !(await alive(nbdfuse.pid)));
      assert.notDeepEqual(await leftUnder(dir), [], "a killed mount leaves its mounts");
      await dirtybitOk(["umount", dir]);
      assert.deepEqual(await leftUnder(dir), []);
      assert.ok(!await exists(socketDir), "umount removes a killed mount's socket directory");

      const k = await startMount(chain, dir);
      const killed = JSON.parse(await Deno.readTextFile(join(dir, STATE_FILE)));
      k.child.kill("SIGKILL");
      await k.child.status;
      await k.done;
      const again = await startMount(chain, dir);
      assert.match(again.stderr(), /removed what a killed mount/);
      assert.ok(!await exists(killed.socketDir), "the next mount removes the old socket directory");
      assert.equal(await Deno.readTextFile(join(dir, "p1", "c.txt")), v2["c.txt"]);
      again.child.kill("SIGINT");
      assert.equal((await again.child.status).code, 0, again.stderr());
      await again.done;
      assert.deepEqual(await leftUnder(dir), []);
      assert.deepEqual([...Deno.readDirSync(dir)], []);
    });
  } finally {
    await qsd?.stop();
    await Deno.remove(tmp, { recursive: true });
  }
});
