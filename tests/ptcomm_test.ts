/**
 * PTCOMM protocol tests: the FD emulator drives the backend process byte for
 * byte. Protocol edges (malformed input, cancel, chain refusal) run against
 * the backend's own process glue with a stand-in engine; the end-to-end
 * chain against a live qemu-storage-daemon runs `main.ts backend` with the
 * real engine.
 *
 * @module
 */
import assert from "node:assert/strict";
import { FdEmulator } from "./ptcomm/emulator.ts";
import { standinPayload } from "./ptcomm/standin_backend.ts";
import { baculaTiming } from "./ptcomm/sessions.ts";
import { withDir } from "./helpers.ts";

const STANDIN = [
  new URL("../lib/bacula/cloudstack_backend.sh", import.meta.url).pathname,
  Deno.execPath(),
  "run",
  "-A",
  new URL("./ptcomm/standin_backend.ts", import.meta.url).pathname,
];
const PAYLOAD = 1 << 20;

function backupJob(id: number, level: "F" | "I" | "D", type = "B", since: string[] = []) {
  return [
    `Name=CSBackup.2026-11-26_07.06.28_0${id}`,
    `JobID=${id}`,
    `Type=${type}`,
    `Level=${level}`,
    ...since,
    "Namespace=@cloudstack",
  ];
}

function emulate(dir: string, env: Record<string, string> = {}): FdEmulator {
  return new FdEmulator(STANDIN, {
    cwd: dir,
    timeoutMs: 30_000,
    env: { STANDIN_BYTES: String(PAYLOAD), ...env },
  });
}

function params(dir: string): string[] {
  return [
    "vm=web01",
    `qmp=${dir}/qmp.sock`,
    "node=disk0",
    `state_dir=${dir}/state`,
    `log_file=${dir}/backend.log`,
  ];
}

/** Runs `body` against a fresh emulated backend working in `dir`; always disposes of it. */
async function withBackend<T>(
  dir: string,
  body: (fd: FdEmulator) => Promise<T>,
  env: Record<string, string> = {},
): Promise<T> {
  const fd = emulate(dir, env);
  try {
    return await body(fd);
  } finally {
    await fd.dispose();
  }
}

/** Runs `body` with a temporary directory and one emulated backend working in it. */
function inSession(
  body: (fd: FdEmulator, dir: string) => Promise<void>,
  env: Record<string, string> = {},
): Promise<void> {
  return withDir((dir) => withBackend(dir, (fd) => body(fd, dir), env));
}

/** Opens a session and sends the job's start command, which the backend acknowledges with F. */
async function start(fd: FdEmulator, job: string[], params: string[], command: string) {
  await fd.open(job, params);
  await fd.command(command);
  await fd.expect("F");
}

/** Waits for the backend to exit with nothing on stderr and `code` ("failure": any but 0). */
async function expectExit(fd: FdEmulator, code: number | "failure"): Promise<void> {
  const exit = await fd.exit();
  assert.equal(exit.stderr, "");
  if (code === "failure") assert.notEqual(exit.code, 0);
  else assert.equal(exit.code, code);
}

/** Closes the backend's input and checks that it fails cleanly. */
async function expectFailure(fd: FdEmulator): Promise<void> {
  await fd.closeInput();
  await expectExit(fd, "failure");
}

/** A whole backup session; returns the files. */
async function backup(dir: string, id: number, level: "F" | "I" | "D") {
  const timing = await baculaTiming(dir, level);
  return await withBackend(dir, async (fd) => {
    await start(fd, backupJob(id, level, "B", timing.since), params(dir), "BackupStart");
    const files = await fd.readFiles(true);
    await fd.end();
    await expectExit(fd, 0);
    timing.ended();
    return { files, messages: fd.messages };
  });
}

/** Checks that a session ends with an A naming `text`, a clean exit and nothing on stderr. */
async function expectAbort(fd: FdEmulator, text: string): Promise<void> {
  let p = await fd.next("A");
  while (p && p.kind !== "A") p = await fd.next("A");
  const abort = fd.said("A").join("\n");
  assert.ok(abort.includes(text), `A message '${abort}' should mention '${text}'`);
  await expectFailure(fd);
}

Deno.test("backup Full then Incremental: names, packets, messages, exit 0", async () => {
  await withDir(async (dir) => {
    const full = await backup(dir, 1, "F");
    assert.equal(full.files.length, 1);
    const f = full.files[0];
    assert.equal(f.fname, "/@cloudstack/web01/disk0/full-1.dbit");
    assert.ok(f.attrs.some((a) => /^STAT:F \d+ 0 0 100640 1$/.test(a)), f.attrs.join());
    assert.ok(f.attrs.some((a) => /^TSTAMP:\d+ \d+ \d+$/.test(a)));
    assert.ok(f.packetSizes.every((n) => n > 0 && n <= 999999));
    const header = JSON.parse(new TextDecoder().decode(f.data!.subarray(0, f.data!.indexOf(10))));
    assert.deepEqual(
      f.data!.subarray(f.data!.indexOf(10) + 1),
      standinPayload("disk0", header.id, PAYLOAD),
    );
    assert.ok(full.messages.some((m) => m.kind === "I" && m.text.includes("dirty (L1)")));
    const incr = await backup(dir, 2, "I");
    assert.equal(incr.files[0].fname, "/@cloudstack/web01/disk0/incremental-2.dbit");
    const h2 = JSON.parse(
      new TextDecoder().decode(incr.files[0].data!.subarray(0, incr.files[0].data!.indexOf(10))),
    );
    assert.equal(h2.parent, header.id);
  });
});

Deno.test("incremental without a parent falls back to full with a warning naming the reason", async () => {
  await withDir(async (dir) => {
    const r = await backup(dir, 3, "I");
    assert.equal(r.files[0].fname, "/@cloudstack/web01/disk0/full-3.dbit");
    const said = r.messages.filter((m) => m.kind === "W" && m.text.includes("no previous backup"));
    assert.equal(said.length, 1, "the fallback is said once");
  });
});

Deno.test("estimate lists the files with expected sizes and no data", async () => {
  await inSession(async (fd, dir) => {
    await start(
      fd,
      ["Name=-Console-.2026", "JobID=0", "Type=E", "Level=F"],
      params(dir),
      "EstimateStart",
    );
    const files = await fd.readFiles(false);
    assert.deepEqual(files.map((f) => f.fname), ["/@cloudstack/web01/disk0/full-0.dbit"]);
    assert.ok(files[0].attrs.includes(`STAT:F ${PAYLOAD} 0 0 100640 1`));
    await fd.end();
    await expectExit(fd, 0);
  });
});

Deno.test("listing and query sessions", async () => {
  await withDir(async (dir) => {
    await withBackend(dir, async (fd) => {
      await start(fd, ["Name=-Console-.1", "JobID=0", "Type=E"], [
        ...params(dir),
        "listing=/@cloudstack/web01",
      ], "ListingStart");
      const files = await fd.readFiles(false);
      assert.deepEqual(files.map((f) => f.fname), ["disk0/"]);
      await fd.end();
      await expectExit(fd, 0);
    });
    await withBackend(dir, async (q) => {
      await start(
        q,
        ["Name=-Console-.2", "JobID=0", "Type=E"],
        [...params(dir), "query=disks"],
        "QueryStart",
      );
      assert.match(await q.expect("C"), /^disk=disk0,level=\w+,bytes=\d+$/);
      await q.expect("F");
      await q.send("T");
      await q.closeInput();
      await expectExit(q, 0);
    });
  });
});

/** Restores files in the given order into where=DIR/r; returns the per-file answers. */
function restore(
  dir: string,
  files: { fname: string; data: Uint8Array }[],
  where = `${dir}/r`,
) {
  return withBackend(dir, async (fd) => {
    await start(fd, [
      "Name=CSRestore.1",
      "JobID=9",
      "Type=R",
      `Where=${where}`,
      "Replace=a",
      "Namespace=@cloudstack",
    ], [
      ...params(dir),
      "format=raw",
    ], "RestoreStart");
    const answers = [];
    for (const f of files) answers.push(await fd.restoreFile(`${where}${f.fname}`, f.data));
    await fd.command("FINISH");
    await fd.expect("F");
    await fd.end();
    const { code, stderr } = await fd.exit();
    assert.equal(stderr, "");
    return { answers, code, messages: fd.messages };
  });
}

Deno.test("restore of the chain in job order, and a wrong order refused", async () => {
  await withDir(async (dir) => {
    const full = (await backup(dir, 1, "F")).files[0];
    const incr = (await backup(dir, 2, "I")).files[0];
    const ok = await restore(dir, [{ fname: full.fname, data: full.data! }, {
      fname: incr.fname,
      data: incr.data!,
    }]);
    const clean = { accept: "OK", result: "OK", errors: [] };
    assert.deepEqual(ok.answers, [clean, clean]);
    assert.equal(ok.code, 0);
    const restored = await Deno.readFile(`${dir}/r/@cloudstack/web01/disk0.raw`);
    assert.equal(restored.length, 2 * PAYLOAD);
    const bad = await restore(dir, [{ fname: incr.fname, data: incr.data! }], `${dir}/r2`);
    // One job error (Q) for the file, and its data acknowledged: no second PTCOMM error.
    assert.equal(bad.answers[0].result, "OK");
    assert.equal(bad.answers[0].errors.length, 1);
    assert.match(bad.answers[0].errors[0], /needs parent/);
  });
});

Deno.test("in-place restore without guest_stopped=true is refused with a clear error for that file", async () => {
  await withDir(async (dir) => {
    const full = (await backup(dir, 1, "F")).files[0];
    const r = await restore(dir, [{ fname: full.fname, data: full.data! }], "");
    assert.equal(r.answers[0].accept, "SKIP");
    assert.match(r.answers[0].errors[0], /overwrites it: confirm .* guest_stopped=true/);
  });
});

/** A slow stand-in engine with a large disk, so that a backup is still running when interrupted. */
const SLOW = { STANDIN_BYTES: String(64 << 20), STANDIN_SLOW_MS: "20" };

Deno.test("cancel by SIGUSR1 mid-backup: prompt clean exit, engine cleaned up", async () => {
  await inSession(async (fd, dir) => {
    await start(fd, backupJob(5, "F"), params(dir), "BackupStart");
    await fd.expect("C");
    let p = await fd.next("data");
    while (p?.kind !== "D") p = await fd.next("data");
    const t0 = Date.now();
    fd.process.kill("SIGUSR1");
    await expectExit(fd, 8);
    assert.ok(Date.now() - t0 < 5000, "backend must exit promptly on SIGUSR1");
    assert.equal(await Deno.readTextFile(`${dir}/state/cancel-cleanup`), "disk0");
  }, SLOW);
});

Deno.test("plugin going away (EOF) mid-backup stops the backend", async () => {
  await inSession(async (fd, dir) => {
    await start(fd, backupJob(6, "F"), params(dir), "BackupStart");
    await expectFailure(fd);
  }, SLOW);
});

Deno.test("malformed input: bad header", async () => {
  await inSession(async (fd) => {
    await fd.raw("X000005\nHello");
    await expectAbort(fd, "unknown packet kind");
  });
});

Deno.test("malformed input: oversized length (7 digits)", async () => {
  await inSession(async (fd) => {
    await fd.hello();
    await fd.raw("C1000000\nJob\n");
    await expectAbort(fd, "not a newline");
  });
});

Deno.test("malformed input: unknown job start command", async () => {
  await inSession(async (fd, dir) => {
    await fd.open(backupJob(1, "F"), params(dir));
    await fd.command("BOGUSCOMMAND");
    await expectAbort(fd, "unknown job start command 'BOGUSCOMMAND'");
  });
});

Deno.test("malformed input: wrong packet kind (D in the Job block)", async () => {
  await inSession(async (fd) => {
    await fd.hello();
    await fd.command("Job");
    await fd.send("D", "Name=x\n");
    await expectAbort(fd, "expected a Job line or F, got D");
  });
});

Deno.test("malformed input: unknown restore command and DATA without a file", async () => {
  await inSession(async (fd, dir) => {
    await start(
      fd,
      ["Name=R", "JobID=3", "Type=R", `Where=${dir}/r`, "Replace=a"],
      params(dir),
      "RestoreStart",
    );
    await fd.command("DATA");
    await expectAbort(fd, "DATA without an accepted file");
  });
});

Deno.test("early EOF inside a packet and between packets", async () => {
  await withDir(async (dir) => {
    await withBackend(dir, async (fd) => {
      await fd.raw("C000019\nHello clou");
      await expectFailure(fd);
    });
    await withBackend(dir, async (fd) => {
      await fd.hello();
      await fd.command("Job");
      await fd.closeInput();
      await expectAbort(fd, "plugin closed the connection");
    });
  });
});

Deno.test("parameters: unknown, invalid, conflicting and mode= are job errors naming them", async () => {
  const cases: [string[], string][] = [
    [["vmm=web01"], "unknown parameter 'vmm'"],
    [["ssh_port=70000"], "ssh_port='70000'"],
    [["psk=tooshortsecret"], "psk=(value not shown)"],
    [["secretkey=a", "secretkey_file=/k"], "secretkey and secretkey_file conflict"],
    [["compress=zstd:20"], "compress='zstd:20': must be none, zstd or zstd:N with N from 1 to 19"],
  ];
  await withDir(async (dir) => {
    for (const [extra, text] of cases) {
      await withBackend(dir, async (fd) => {
        await fd.hello();
        await fd.block("Job", backupJob(1, "F"));
        await fd.expect("F");
        await fd.block("Params", [...params(dir), ...extra]);
        await expectAbort(fd, text);
        assert.ok(!fd.said("A").join().includes("tooshortsecret"));
      });
    }
    await withBackend(dir, async (m) => {
      await m.open(backupJob(1, "F"), [...params(dir), "mode=seed"]);
      await m.command("BackupStart");
      await expectAbort(m, "mode=seed: parameter dr_host is missing: give dr_host=HOST");
    });
  });
});

Deno.test("handshake: wrong plugin name is refused with A", async () => {
  await inSession(async (fd) => {
    await fd.command("Hello kubernetes 3");
    await expectAbort(fd, "serves the 'cloudstack' plugin");
  });
});

Deno.test("old plugins' E CANCEL is a cancel", async () => {
  await inSession(async (fd, dir) => {
    await fd.open(backupJob(1, "F"), params(dir));
    await fd.send("E", "CANCEL");
    await expectExit(fd, 8);
  });
});

Deno.test("real engine: Full and Incremental of a live qemu-storage-daemon disk, restored through the backend", async () => {
  const { Qsd } = await import("./fixtures/qsd.ts");
  const { backupSession, estimateSession, qsdParams, restoreSession } = await import(
    "./ptcomm/sessions.ts"
  );
  await withDir(async (dir) => {
    const qsd = await Qsd.start({
      disks: [{ size: 16 << 20, writes: [{ pattern: 0x41, offset: 0, length: 2 << 20 }] }],
    });
    try {
      const p = [...qsdParams(qsd, "vm1", dir), `state_dir=${dir}/state`];
      const full = await backupSession(dir, 11, "F", p);
      assert.deepEqual(full.files.map((f) => f.fname), [
        `/@cloudstack/vm1/${qsd.disks[0].node}/full-11.dbit`,
      ]);
      await qsd.guestWrite(0, 0x42, 4 << 20, 256 << 10);
      const estimate = await estimateSession(dir, "I", p);
      assert.equal(estimate.length, 1);
      assert.match(estimate[0].fname, /\/incremental-0\.dbit$/);
      // The estimate is the checkpoint bitmap's dirty count: the 256 KiB written.
      assert.ok(
        estimate[0].attrs.some((a) => a.startsWith(`STAT:F ${256 << 10} `)),
        estimate[0].attrs.join("\n"),
      );
      const incr = await backupSession(dir, 12, "I", p);
      assert.deepEqual(incr.files.map((f) => f.fname), [
        `/@cloudstack/vm1/${qsd.disks[0].node}/incremental-12.dbit`,
      ]);
      assert.ok(
        incr.messages.some((m) => m.startsWith("I: ") && m.includes("dirty (L1)")),
        incr.messages.join("\n"),
      );
      assert.ok(incr.files[0].data!.length < full.files[0].data!.length);
      const { answers } = await restoreSession(dir, `${dir}/r`, [...p, "format=raw"], [
        ...full.files,
        ...incr.files,
      ]);
      assert.deepEqual(answers, ["OK", "OK"]);
      const target = `${dir}/r/@cloudstack/vm1/${qsd.disks[0].node}.raw`;
      const cmp = await new Deno.Command("qemu-img", {
        args: ["compare", "-U", "-f", "qcow2", "-F", "raw", qsd.disks[0].image, target],
      }).output();
      assert.equal(cmp.code, 0, new TextDecoder().decode(cmp.stdout));
      const wrong = await restoreSession(dir, `${dir}/r2`, [...p, "format=raw"], incr.files);
      assert.match(wrong.answers[0], /^Q:/);
    } finally {
      await qsd.stop();
    }
  });
});

Deno.test("real engine: a relative state_dir and where= are the FD working directory's", async () => {
  const { Qsd } = await import("./fixtures/qsd.ts");
  const { backupSession, qsdParams, restoreSession } = await import("./ptcomm/sessions.ts");
  await withDir(async (dir) => {
    const qsd = await Qsd.start({
      disks: [{ size: 4 << 20, writes: [{ pattern: 0x43, offset: 0, length: 1 << 20 }] }],
    });
    try {
      const p = [...qsdParams(qsd, "vm1", dir), "state_dir=rel-state"];
      const full = await backupSession(dir, 21, "F", p);
      assert.ok((await Deno.stat(`${dir}/rel-state`)).isDirectory);
      // qcow2: qemu-img and qemu-nbd get the target's path absolute.
      const { answers } = await restoreSession(
        dir,
        "rel-where",
        [...p, "format=qcow2"],
        full.files,
      );
      assert.deepEqual(answers, ["OK"]);
      const target = `${dir}/rel-where/@cloudstack/vm1/${qsd.disks[0].node}.qcow2`;
      const cmp = await new Deno.Command("qemu-img", {
        args: ["compare", "-U", "-f", "qcow2", "-F", "qcow2", qsd.disks[0].image, target],
      }).output();
      assert.equal(cmp.code, 0, new TextDecoder().decode(cmp.stdout));
    } finally {
      await qsd.stop();
    }
  });
});

Deno.test("real engine: compress=zstd is zstd at the default level, as the CLI's --compress zstd", async () => {
  // It used to pass the parameter check and then fail in the engine (exit 70) after the point in time.
  const { Qsd } = await import("./fixtures/qsd.ts");
  const { backupSession, qsdParams } = await import("./ptcomm/sessions.ts");
  await withDir(async (dir) => {
    const qsd = await Qsd.start({
      disks: [{ size: 4 << 20, writes: [{ pattern: 0x44, offset: 0, length: 1 << 20 }] }],
    });
    try {
      const p = [...qsdParams(qsd, "vm1", dir), `state_dir=${dir}/state`, "compress=zstd"];
      const full = await backupSession(dir, 31, "F", p);
      const data = full.files[0].data!;
      // The header JSON's length is at offset 12 (docs/stream-format.md).
      const length = new DataView(data.buffer, data.byteOffset).getUint32(12, true);
      const header = JSON.parse(new TextDecoder().decode(data.subarray(16, 16 + length)));
      assert.equal(header.compression, "zstd:3");
    } finally {
      await qsd.stop();
    }
  });
});
