/**
 * The backup, restore, inspect and verify commands as scripts see them: exit
 * codes and one-line messages for every kind of usage error, and a backup
 * piped into a restore through stdout and stdin (Bacula's bpipe).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { withQsd } from "./fixtures/qsd.ts";
import { assertOneLineError, assertSameImage, cliCommand, dirtybit } from "./fixtures/cli.ts";

const MiB = 1 << 20;

Deno.test("cli: usage errors and unreachable sources exit 2 or 5 with one line", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-test-" });
  const state = join(dir, "state");
  const qmp = join(dir, "no-qmp.sock");
  const backup = ["backup", "--state-dir", state];
  const cases: [string[], number, string][] = [
    [["frobnicate"], 2, "unknown command 'frobnicate'"],
    [[...backup, "--node", "disk0"], 2, "--qmp is required"],
    [[...backup, "--qmp"], 2, "backup: "],
    [[...backup, "--qmp", qmp], 2, "--node is required"],
    [[...backup, "--qmp", qmp, "--node", "d", "--level", "weekly"], 2, "--level must be one of"],
    [[...backup, "--qmp", qmp, "--node", "d", "--bogus"], 2, "--bogus"],
    [
      [...backup, "--qmp", qmp, "--node", "d", "--compress", "zstd:20"],
      2,
      "backup: --compress 'zstd:20': must be none, zstd or zstd:N with N from 1 to 19",
    ],
    // A plain zstd is zstd at the default level: it passes the check (and fails on the QMP socket).
    [[...backup, "--qmp", qmp, "--node", "d", "--compress", "zstd"], 5, qmp],
    [[...backup, "--qmp", qmp, "--node", "d", "extra"], 2, "unexpected argument 'extra'"],
    [[...backup, "--qmp", qmp, "--node", "a", "--node", "b", "--out", "-"], 2, "one disk"],
    [[...backup, "--qmp", qmp, "--node", "d", "--out", dir], 5, qmp],
    [[...backup, "--qmp", qmp, "--node", "d", "--out", `${dir}/nodir/`], 2, "does not exist"],
    [["restore", "--out", join(dir, "nodir", "t.raw"), "s.dbit"], 2, "directory"],
    [["restore", "s.dbit"], 2, "--out is required"],
    [["restore", "--out", join(dir, "t.raw")], 2, "at least one STREAM"],
    [["restore", "--out", join(dir, "t.raw"), "-", "s.dbit"], 2, "'-' (stdin) must be the only"],
    [["restore", "--out", join(dir, "t.raw"), "--format", "vmdk", "s"], 2, "--format"],
    [["restore", "--out", join(dir, "t.raw"), join(dir, "none.dbit")], 5, "none.dbit"],
    [["inspect"], 2, "exactly one STREAM"],
    [["inspect", "--bogus", "s"], 2, "--bogus"],
    [["inspect", join(dir, "none.dbit")], 5, "none.dbit"],
    [["verify"], 2, "at least one STREAM"],
  ];
  try {
    for (const [args, code, includes] of cases) {
      const r = await dirtybit(args);
      assert.equal(r.stdout, "", `dirtybit ${args.join(" ")} printed on stdout`);
      assertOneLineError(r, code, includes);
    }
    assert.equal(await Deno.readTextFile(join(state, ".lock")), "", "lock released");
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["state"], "no files made");

    // A lock held by a live job (this process) stops a second job on the state directory.
    using lock = await Deno.open(join(state, ".lock"), { write: true });
    assert.ok(await lock.tryLock(true));
    await lock.write(new TextEncoder().encode(`${Deno.pid}\n`));
    assertOneLineError(
      await dirtybit([...backup, "--qmp", qmp, "--node", "d"]),
      2,
      `another dirtybit job (pid ${Deno.pid})`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: help says what each command takes, in its own words", async () => {
  const help = async (...args: string[]) => {
    const r = await dirtybit([...args, "--help"]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  };
  const backup = await help("backup");
  assert.match(backup, /--qmp SOCKET +QMP .*\(not with --vm or\n +--domain/);
  assert.doesNotMatch(backup, /\(required\)/);
  const convert = await help("convert");
  // One line per writer of the registry, with its summary.
  assert.match(convert, /\n {2}vmdk streamOptimized +VMDK streamOptimized v3/);
  assert.match(convert, /\n {2}qcow2 +qcow2 v3/);
  const replicate = await help("replicate");
  assert.match(replicate, /--node {18}block node of the disk to replicate/);
  assert.doesNotMatch(replicate, /back up|hash databases/);
  // Every option line's description starts in the same column.
  const columns = replicate.split("\n").filter((l) => /^ {2}--\S/.test(l)).map((l) =>
    l.search(/(?<=\S) {2,}\S/) + l.slice(l.search(/(?<=\S) {2,}\S/)).search(/\S/)
  );
  assert.equal(new Set(columns).size, 1, replicate);
  const [failover, failback, reprotect] = [
    await help("failover"),
    await help("failback"),
    await help("reprotect"),
  ];
  assert.match(failover, /^usage: dirtybit failover pre/);
  assert.doesNotMatch(failover, /failback pre|reprotect {2}/);
  assert.match(failback, /^usage: dirtybit failback pre/);
  assert.match(reprotect, /^usage: dirtybit reprotect/);
  assert.doesNotMatch(reprotect, /failover exec/);
  const backend = await help("backend");
  const [user, internal] = backend.split("Set by Bacula itself");
  assert.match(user, /\n {2}vm {3,}/);
  assert.doesNotMatch(user, /accurate|abort_on_error/);
  assert.match(internal, /accurate/);
});

Deno.test("cli: version 1 and 2 streams (older dirtybits) inspect, verify and restore", async () => {
  const checksums: Record<number, string> = { 1: "cb37623f7adafa91", 2: "a0922eeae9978d36" };
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-test-" });
  try {
    for (const version of [1, 2]) {
      const fixture = new URL(`./fixtures/streams/v${version}-full.dbit`, import.meta.url).pathname;
      const shown = await dirtybit(["inspect", fixture]);
      assert.equal(shown.code, 0, shown.stderr);
      assert.match(shown.stdout, new RegExp(`^format: +version ${version}$`, "m"));
      assert.match(
        shown.stdout,
        new RegExp(`^checksum: +${checksums[version]} \\(verified\\)$`, "m"),
      );
      const verified = await dirtybit(["verify", fixture]);
      assert.equal(verified.code, 0, verified.stderr);
      assert.match(verified.stdout, new RegExp(`^OK +${fixture}: full v${version}-full$`, "m"));
      const out = join(dir, `v${version}.raw`);
      const restored = await dirtybit(["restore", "--out", out, fixture]);
      assert.equal(restored.code, 0, restored.stderr);
      assert.equal((await Deno.stat(out)).size, 3 * MiB + 1000);
    }
    assert.deepEqual(
      await Deno.readFile(join(dir, "v1.raw")),
      await Deno.readFile(join(dir, "v2.raw")),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: backup --out - piped into restore --out X - (bpipe), full then incremental", async () => {
  await withQsd({
    disks: [{ size: 32 * MiB, writes: [{ pattern: 0x81, offset: 0, length: 4 * MiB }] }],
  }, async ({ qsd, at }) => {
    const target = at("t.qcow2");
    for (const level of ["full", "incremental"]) {
      const backup = cliCommand([
        "backup",
        ...qsd.sourceArgs(),
        ...["--state-dir", at("state"), "--out", "-", "--json"],
      ], { stdin: "null" }).spawn();
      const restore = cliCommand(["restore", "--out", target, "--json", "-"], {
        stdin: "piped",
      }).spawn();
      const [, backupErr, restoreOut, restoreErr, b, r] = await Promise.all([
        backup.stdout.pipeTo(restore.stdin),
        new Response(backup.stderr).text(),
        new Response(restore.stdout).text(),
        new Response(restore.stderr).text(),
        backup.status,
        restore.status,
      ]);
      assert.equal(b.code, 0, backupErr);
      assert.equal(r.code, 0, restoreErr);
      // With the stream on stdout, the JSON summary goes to stderr (after the warning of a first full).
      const [summary] = JSON.parse(backupErr.slice(backupErr.indexOf("[")));
      assert.equal(summary.level, level);
      assert.equal(summary.file, "-");
      const restored = JSON.parse(restoreOut);
      assert.deepEqual(restored.applied.map((a: { backupId: string }) => a.backupId), [
        summary.backupId,
      ]);
      await qsd.snapshotImage(0, at("p.raw"));
      await assertSameImage(target, at("p.raw"));
      await qsd.guestWrite(0, 0x82, 10 * MiB, 3 * MiB);
    }
  });
});

Deno.test("cli: backup --out to a FIFO writes through it and leaves the FIFO in place", async () => {
  await withQsd({
    disks: [{ size: 8 * MiB, writes: [{ pattern: 0x61, offset: 0, length: MiB }] }],
  }, async ({ qsd, dir }) => {
    const fifo = join(dir, "pipe");
    const mk = await new Deno.Command("mkfifo", { args: [fifo] }).output();
    assert.ok(mk.success);
    // The reader stands for a device or a pipe such as /dev/null: never to be replaced by a file.
    const reader = new Deno.Command("sh", { args: ["-c", `cat ${fifo} > ${join(dir, "s.dbit")}`] })
      .spawn();
    const r = await dirtybit([
      "backup",
      ...qsd.sourceArgs([qsd.disks[0].node]),
      "--state-dir",
      join(dir, "state"),
      "--out",
      fifo,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok((await reader.status).success);
    assert.ok(Deno.lstatSync(fifo).isFifo, "the FIFO is still a FIFO");
    assert.equal((await dirtybit(["verify", join(dir, "s.dbit")])).code, 0);
  });
});
