/**
 * Errors say what and where, driven as a user would: a full file system (a
 * small loop-mounted ext4), a read-only one and a file where a directory is
 * expected exit 6 or 2 with one line naming the path and leave no temporary
 * or partial file; relative paths work from the caller's working directory;
 * verify and restore agree on exit codes; usage errors for bad numbers and
 * names.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { withQsd } from "./fixtures/qsd.ts";
import { run } from "./helpers.ts";
import {
  assertOneLineError,
  assertSameImage,
  cliCommand,
  type CliResult,
  dirtybit,
  dirtybitOk,
} from "./fixtures/cli.ts";
import { pseudoRandom } from "./fixtures/bytes.ts";
import { exists } from "./fixtures/kills.ts";
import { ReceiverProcess, Sites } from "./replication/sites.ts";

const MiB = 1 << 20;
const PSK = "0123456789abcdef0123456789abcdef";

/** `dirtybit ARGS` run from `cwd`, killed if it has not ended within 60 s (a receiver that listens). */
function dirtybitIn(cwd: string, args: string[]): Promise<CliResult> {
  return dirtybit(args, { cwd, signal: AbortSignal.timeout(60_000) });
}

/** Names under `dir` (recursively) that a failed run must not leave: temporary and partial files. */
async function leftovers(dir: string): Promise<string[]> {
  const found: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const path = join(dir, e.name);
    if (/\.tmp-|\.partial$/.test(e.name)) found.push(path);
    if (e.isDirectory && e.name !== "lost+found") found.push(...await leftovers(path));
  }
  return found;
}

/** The command failed with `code`, one line naming `path`, no NBD URI, and left nothing in `dirs`. */
async function assertRefused(
  r: CliResult,
  code: number,
  path: string,
  dirs: string[],
): Promise<string> {
  const line = assertOneLineError(r, code, path);
  assert.doesNotMatch(line, /nbd\+unix|nbd:\/\//, "an internal NBD URI in the message");
  for (const dir of dirs) assert.deepEqual(await leftovers(dir), [], `left in ${dir}: ${line}`);
  return line;
}

/** Fills the file system of `dir` to the last block (root may use the reserve: mkfs -m 0). */
async function fill(dir: string): Promise<void> {
  using file = await Deno.open(join(dir, "filler"), { write: true, create: true });
  for (const size of [MiB, 4096, 1024]) {
    const chunk = new Uint8Array(size);
    try {
      for (;;) await file.write(chunk);
    } catch (err) {
      if (!(err instanceof Error) || !/os error 28/.test(err.message)) throw err;
    }
  }
  await file.sync().catch(() => {});
}

/** Runs `body` with a fresh 16 MiB ext4 (no root reserve) loop-mounted on `mnt`. */
async function withSmallFileSystem(image: string, mnt: string, body: () => Promise<void>) {
  await run("truncate", ["-s", "16M", image]);
  await run("mkfs.ext4", ["-q", "-m", "0", image]);
  await run("mount", ["-o", "loop", image, mnt]);
  try {
    await body();
  } finally {
    await run("umount", [mnt]);
  }
}

Deno.test("errors: full, read-only and not-a-directory targets exit 6 or 2 naming the path", async () => {
  // Disk 0 (random data) has the chain of state/, disk 1 the one kept on the small file system,
  // disk 2 the chain restored onto images there.
  const disks = [{ size: 24 * MiB }, { size: 4 * MiB }, { size: 4 * MiB }];
  await withQsd({ disks }, async ({ qsd, dir, at }) => {
    await qsd.guestPwrite(0, pseudoRandom(20 * MiB, 7), 0);
    const source = (disk = 0) => qsd.sourceArgs([qsd.disks[disk].node]);
    // Full backups only: the cases test where the files go, not the level a chain allows.
    const backup = (state: string, out: string, more: string[] = [], disk = 0) =>
      dirtybit([
        "backup",
        ...source(disk),
        "--state-dir",
        state,
        "--out",
        out,
        "--level",
        "full",
        ...more,
      ]);
    await Deno.writeTextFile(at("psk"), PSK, { mode: 0o600 });
    const receive = (replicaDir: string) =>
      dirtybitIn(dir, [
        "replicate",
        "receive",
        "--listen",
        "127.0.0.1:0",
        "--psk-file",
        at("psk"),
        "--replica-dir",
        replicaDir,
      ]);
    const restore = (out: string, stream: string) => dirtybit(["restore", "--out", out, stream]);
    const convert = (out: string, format = "raw") =>
      dirtybit(["convert", "--from", at("src.qcow2"), "--format", format, "--out", out]);
    // Random data: the stream (20 MiB) does not fit on the 16 MiB file system.
    const full = at("full.dbit");
    await dirtybitOk(["backup", ...source(), "--state-dir", at("state"), "--out", full]);
    await qsd.snapshotImage(0, at("src.raw"));
    await run("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", at("src.raw"), at("src.qcow2")]);

    const small = [at("f2.dbit"), at("i2.dbit")];
    for (const [i, stream] of small.entries()) {
      await qsd.guestPwrite(2, pseudoRandom(MiB, 20 + i), i * MiB);
      await dirtybitOk(["backup", ...source(2), "--state-dir", at("st2"), "--out", stream]);
    }

    const mnt = at("mnt");
    await Deno.mkdir(mnt);
    await withSmallFileSystem(at("fs.img"), mnt, async () => {
      const local = [mnt, at("state")];
      // No space left while writing.
      for (const out of [join(mnt, "b.dbit"), mnt]) {
        await assertRefused(await backup(at("state"), out, ["--compress", "none"]), 6, mnt, local);
      }
      assert.deepEqual([...Deno.readDirSync(mnt)].map((e) => e.name), ["lost+found"]);
      for (const out of ["r.raw", "r.qcow2"]) {
        const target = join(mnt, out);
        const line = await assertRefused(
          await restore(target, full),
          6,
          target,
          local,
        );
        assert.match(line, /no space left/);
        assert.ok(!await exists(target), `a failed full restore leaves no ${target}`);
      }
      for (const format of ["raw", "qcow2"]) {
        const out = join(mnt, `c.${format}`);
        const r = await convert(out, format);
        assert.match(await assertRefused(r, 6, out, local), /no space left/);
        assert.ok(!await exists(out), `a failed convert leaves no ${out}`);
      }
      // Images restored there before the file system became read-only.
      for (const image of ["e.raw", "e.qcow2"]) {
        await dirtybitOk(["restore", "--out", join(mnt, image), small[0]]);
      }
      // A state directory on a full file system: made before, and made now.
      await dirtybitOk([
        "backup",
        ...source(1),
        "--state-dir",
        join(mnt, "st"),
        "--out",
        at("a.dbit"),
      ]);
      await fill(mnt);
      await assertRefused(await backup(join(mnt, "new-state"), at("b.dbit")), 6, mnt, local);
      await qsd.guestPwrite(1, pseudoRandom(MiB, 9), 0);
      const kept = await dirtybit([
        "backup",
        ...source(1),
        "--state-dir",
        join(mnt, "st"),
        "--out",
        at("c.dbit"),
      ]);
      await assertRefused(kept, 6, join(mnt, "st"), local);
      assert.deepEqual(await leftovers(dir), []);
      await assertRefused(await receive(join(mnt, "replicas")), 6, join(mnt, "replicas"), local);

      // A read-only file system.
      await run("mount", ["-o", "remount,ro", mnt]);
      const readOnly = [
        [await backup(at("state"), join(mnt, "x.dbit")), join(mnt, "x.dbit")],
        [await backup(join(mnt, "ro-state"), at("d.dbit")), join(mnt, "ro-state")],
        [await restore(join(mnt, "ro.raw"), full), join(mnt, "ro.raw")],
        [
          await restore(join(mnt, "ro.qcow2"), full),
          join(mnt, "ro.qcow2"),
        ],
        [
          await convert(join(mnt, "ro.raw")),
          join(mnt, "ro.raw"),
        ],
        [await receive(join(mnt, "ro-replicas")), join(mnt, "ro-replicas")],
        [await restore(join(mnt, "e.raw"), small[1]), join(mnt, "e.raw")],
        [
          await restore(join(mnt, "e.qcow2"), small[1]),
          join(mnt, "e.qcow2"),
        ],
      ] as const;
      for (const [r, path] of readOnly) {
        assert.match(await assertRefused(r, 6, path, local), /read-only/i);
      }
    });

    // A file where a directory is expected: a usage error.
    const file = at("afile");
    await Deno.writeTextFile(file, "not a directory");
    const wrongKind = [
      [await backup(file, at("e.dbit")), file],
      [await backup(join(file, "s"), at("e.dbit")), join(file, "s")],
      [await backup(at("state"), join(file, "b.dbit")), join(file, "b.dbit")],
      [await restore(join(file, "r.raw"), full), join(file, "r.raw")],
      [await restore(join(file, "r.qcow2"), full), join(file, "r.qcow2")],
      [
        await convert(join(file, "c.raw")),
        join(file, "c.raw"),
      ],
      [await receive(file), file],
    ] as const;
    for (const [r, path] of wrongKind) await assertRefused(r, 2, path, [dir]);
  });
});

Deno.test("errors: a replica directory that fills up fails the seed with 6, the receiver names the replica", async () => {
  const sites = await Sites.start(24 * MiB);
  const mnt = join(sites.dir, "mnt");
  await Deno.mkdir(mnt);
  await withSmallFileSystem(join(sites.dir, "fs.img"), mnt, async () => {
    const replicas = join(mnt, "dr");
    const receiver = await ReceiverProcess.start([
      "--psk-file",
      sites.pskFile,
      "--replica-dir",
      replicas,
    ]);
    try {
      await sites.randomWrite(0, 20 * MiB);
      const seed = await sites.send("seed", receiver.port);
      // The receiver says what and where; the sender passes it on, even when its own write to
      // the closing connection fails first.
      const line = assertOneLineError(seed, 6, "the peer refused: ");
      assert.ok(line.includes(join(replicas, "vda")), line);
      assert.match(receiver.log, new RegExp(`${join(replicas, "vda")}.*: no space left`));
      assert.deepEqual(await leftovers(mnt), []);
    } finally {
      await receiver.stop();
    }
  }).finally(() => sites.stop());
});

Deno.test("errors: relative paths work from the working directory, QEMU included", async () => {
  const sites = await Sites.start(8 * MiB);
  const receiver = await ReceiverProcess.start(sites.receiverArgs());
  try {
    const cwd = sites.dir;
    const source = sites.qsd.sourceArgs();
    const seed = await dirtybitIn(cwd, [
      "replicate",
      "seed",
      ...source,
      "--dr",
      `127.0.0.1:${receiver.port}`,
      "--psk-file",
      "psk",
      "--name",
      "vda",
      "--state-dir",
      "ss2",
      "--retry-count",
      "0",
    ]);
    assert.equal(seed.code, 0, seed.stderr);
    const status = await dirtybitIn(cwd, ["replicate", "status", "--state-dir", "ss2", "--json"]);
    assert.equal(status.code, 0, status.stderr);
    assert.equal(JSON.parse(status.stdout)[0].name, "vda");

    const backup = await dirtybitIn(cwd, [
      "backup",
      ...source,
      "--state-dir",
      "bs",
      "--out",
      "full.dbit",
    ]);
    assert.equal(backup.code, 0, backup.stderr);
    const raw = await sites.snapshot("now");
    for (const out of ["r.raw", "r.qcow2"]) {
      const r = await dirtybitIn(cwd, ["restore", "--out", out, "full.dbit"]);
      assert.equal(r.code, 0, r.stderr);
      await assertSameImage(join(cwd, out), raw);
    }
    const c = await dirtybitIn(cwd, [
      "convert",
      "--from",
      "r.qcow2",
      "--format",
      "vmdk",
      "--out",
      "c.vmdk",
    ]);
    assert.equal(c.code, 0, c.stderr);
    await assertSameImage(join(cwd, "c.vmdk"), raw);
  } finally {
    await receiver.stop();
    await sites.stop();
  }
});

Deno.test("errors: verify and restore give the same exit code for the same chain error", async () => {
  await withQsd({ disks: [{ size: 8 * MiB }] }, async ({ qsd, at }) => {
    const streams: string[] = [];
    for (let i = 0; i < 3; i++) {
      await qsd.guestPwrite(0, pseudoRandom(MiB, i), i * MiB);
      streams.push(at(`s${i}.dbit`));
      await dirtybitOk([
        "backup",
        ...qsd.sourceArgs(),
        "--state-dir",
        at("st"),
        "--out",
        streams[i],
      ]);
    }
    const corrupt = at("corrupt.dbit");
    const bytes = await Deno.readFile(streams[0]);
    bytes[Math.floor(bytes.length / 2)] ^= 0x10;
    await Deno.writeFile(corrupt, bytes);
    const cases: [string, string[], number][] = [
      ["a full after a full", [streams[0], streams[0]], 4],
      ["a missing parent", [streams[0], streams[2]], 4],
      ["the wrong order", [streams[1], streams[0]], 4],
      ["a corrupt record", [corrupt], 3],
    ];
    for (const [what, chain, code] of cases) {
      const verify = await dirtybit(["verify", ...chain]);
      assert.equal(verify.code, code, `verify of ${what}: ${verify.stdout}${verify.stderr}`);
      const restore = await dirtybit(["restore", "--out", at("t.raw"), ...chain]);
      assertOneLineError(restore, code);
      await Deno.remove(at("t.raw")).catch(() => {});
      await Deno.remove(at("t.raw.dbit.json")).catch(() => {});
    }
  });
});

Deno.test("errors: bad numbers, names and directories are usage errors; a backend told T at once exits 0", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-test-" });
  try {
    const psk = join(dir, "psk");
    await Deno.writeTextFile(psk, PSK, { mode: 0o600 });
    const sender = ["--qmp", join(dir, "q.sock"), "--node", "d", "--dr", "127.0.0.1:1"];
    const cases: [string[], string][] = [
      [
        ["replicate", "push", ...sender, "--psk-file", psk, "--bandwidth-limit", "-5"],
        "at least 1",
      ],
      [["replicate", "push", ...sender, "--psk-file", psk, "--cycle-interval", "-1"], "1..86400"],
      [["replicate", "push", ...sender, "--psk-file", psk, "--retry-count", "-1"], "0..100"],
      [["replicate", "seed", ...sender, "--psk-file", psk, "--name", "../x"], "'../x'"],
      [["replicate", "seed", ...sender, "--psk-file", psk, "--name", "a/b"], "'a/b'"],
      [["failover", "exec", "--name", "../x", "--replica-dir", dir], "'../x'"],
      [
        ["convert", "--from", psk, "--format", "raw", "--out", "-", "--workers", "-1"],
        "from 1 to 64",
      ],
      [["restore", "--to", "proxmox", "--dest", dir, "--vmid", "-1", psk], "--vmid must be"],
      [["replicate", "status", "--state-dir", join(dir, "missing")], join(dir, "missing")],
      [["replicate", "status", "--state-dir", psk], psk],
    ];
    for (const [args, includes] of cases) {
      const r = await dirtybit(args);
      assert.equal(r.stdout, "", `dirtybit ${args.join(" ")} printed on stdout`);
      assertOneLineError(r, 2, includes);
    }
    const backend = cliCommand(["backend"], { stdin: "piped", cwd: dir }).spawn();
    const writer = backend.stdin.getWriter();
    await writer.write(new TextEncoder().encode("T000000\n"));
    await writer.close();
    const out = await backend.output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
