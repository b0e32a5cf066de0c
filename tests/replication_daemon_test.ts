/**
 * `dirtybit replicate daemon`: two disks of one QEMU (real
 * qemu-storage-daemon) on their own schedules to a receiver process; SIGTERM
 * stops it cleanly, a restart resumes (no new seed) and catches up; a disk
 * whose replica the DR site promoted is reported once and not retried; a bad
 * configuration is refused with one line naming the key.
 */
import { assertPrivate } from "./fixtures/modes.ts";
import assert from "node:assert/strict";
import { join } from "node:path";
import { Qsd } from "./fixtures/qsd.ts";
import { cli, imagesEqual, ReceiverProcess } from "./replication/sites.ts";
import { run } from "./helpers.ts";
import { cliCommand } from "./fixtures/cli.ts";
import { delay } from "../lib/core/async.ts";

const MiB = 1 << 20;

/** A running daemon whose stderr is collected. */
class DaemonProcess {
  log = "";
  readonly #pump: Promise<void>;
  constructor(readonly child: Deno.ChildProcess) {
    this.#pump = (async () => {
      for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) this.log += text;
    })();
  }

  static start(config: string): DaemonProcess {
    return new DaemonProcess(
      cliCommand(["replicate", "daemon", "--config", config], { stdin: "null", stdout: "null" })
        .spawn(),
    );
  }

  /** Waits until the log matches `re` (after `from` characters). */
  async waitFor(re: RegExp, from = 0, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!re.test(this.log.slice(from))) {
      if (Date.now() > deadline) throw new Error(`daemon log never matched ${re}:\n${this.log}`);
      await delay(100);
    }
  }

  async stop(): Promise<number> {
    try {
      this.child.kill("SIGTERM");
    } catch {
      // already exited
    }
    const { code } = await this.child.status;
    await this.#pump;
    return code;
  }
}

/**
 * A temp dir with a PSK file, a receiver replicating into `DIR/dr`, and a
 * daemon config sending `disks` to it (state in `DIR/state`, no retries).
 */
async function daemonBed(
  prefix: string,
  defaults: Record<string, unknown>,
  disks: Record<string, unknown>[],
): Promise<{ dir: string; receiver: ReceiverProcess; config: string }> {
  const dir = await Deno.makeTempDir({ prefix });
  const psk = join(dir, "psk");
  await Deno.writeTextFile(psk, "the daemon test's pre-shared key, long enough\n", { mode: 0o600 });
  const receiver = await ReceiverProcess.start([
    "--psk-file",
    psk,
    "--replica-dir",
    join(dir, "dr"),
  ]);
  const config = join(dir, "daemon.json");
  await Deno.writeTextFile(
    config,
    JSON.stringify({
      defaults: {
        dr_host: "127.0.0.1",
        dr_port: receiver.port,
        psk_file: psk,
        state_dir: join(dir, "state"),
        retry_count: 0,
        ...defaults,
      },
      disks,
    }),
  );
  return { dir, receiver, config };
}

Deno.test("replication daemon: schedules per disk, SIGTERM, restart resumes", async () => {
  const qsd = await Qsd.start({
    disks: [
      { size: 16 * MiB, writes: [{ pattern: 0x11, offset: 0, length: MiB }] },
      { size: 8 * MiB, writes: [{ pattern: 0x22, offset: MiB, length: MiB }] },
    ],
  });
  const { dir, receiver, config } = await daemonBed("dirtybit-daemon-", {
    nbd_socket: qsd.nbdSocket,
    qmp: qsd.qmpSocket,
  }, [
    { name: "fast", node: "disk0", cycle_interval: 1 },
    { name: "slow", node: "disk1", cycle_interval: 3 },
  ]);
  let daemon = DaemonProcess.start(config);
  try {
    await daemon.waitFor(/fast: cycle 2 confirmed/);
    await daemon.waitFor(/slow: cycle 1 confirmed/);
    // Start to start: the fast disk ran more cycles than the slow one.
    const count = (name: string) =>
      daemon.log.match(new RegExp(`${name}: cycle \\d+`, "g"))!.length;
    assert.ok(count("fast") > count("slow"), daemon.log);
    assert.equal(await daemon.stop(), 0);
    assert.match(daemon.log, /daemon stopped/);

    await qsd.guestWrite(0, 0x33, 4 * MiB, MiB);
    await qsd.guestWrite(1, 0x44, 6 * MiB, MiB);
    const fast = join(dir, "fast.raw");
    const slow = join(dir, "slow.raw");
    await qsd.snapshotImage(0, fast);
    await run("qemu-img", ["convert", "-f", "raw", "-O", "raw", qsd.disks[1].uri, slow]);

    daemon = DaemonProcess.start(config);
    await daemon.waitFor(/fast: cycle \d+ confirmed: 1048576 bytes dirty/);
    await daemon.waitFor(/slow: cycle \d+ confirmed: 1048576 bytes dirty/);
    assert.doesNotMatch(daemon.log, /seeded/, "a restart resumes, it does not seed again");
    assert.equal(await daemon.stop(), 0);
    assert.ok(await imagesEqual(fast, join(dir, "dr", "fast.qcow2")));
    assert.ok(await imagesEqual(slow, join(dir, "dr", "slow.qcow2")));
    assert.ok(await assertPrivate(join(dir, "state")) > 2);
    assert.ok(await assertPrivate(join(dir, "dr")) > 2);
  } finally {
    await daemon.stop();
    await receiver.stop();
    await qsd.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("replication daemon: a disk whose replica was promoted is reported once and left alone", async () => {
  const qsd = await Qsd.start({
    disks: [
      { size: 8 * MiB, writes: [{ pattern: 0x11, offset: 0, length: MiB }] },
      { size: 8 * MiB, writes: [{ pattern: 0x22, offset: MiB, length: MiB }] },
    ],
  });
  const { dir, receiver, config } = await daemonBed("dirtybit-daemon-fence-", {
    nbd_socket: qsd.nbdSocket,
    qmp: qsd.qmpSocket,
    cycle_interval: 1,
  }, [{ name: "kept", node: "disk0" }, { name: "lost", node: "disk1" }]);
  let daemon = DaemonProcess.start(config);
  try {
    await daemon.waitFor(/lost: cycle 1 confirmed/);
    assert.equal(await daemon.stop(), 0);
    // The DR site promotes one replica as if its source were lost.
    const exec = await cli([
      "failover",
      "exec",
      "--force",
      "--name",
      "lost",
      "--replica-dir",
      join(dir, "dr"),
    ]);
    assert.equal(exec.code, 0, exec.stderr);
    daemon = DaemonProcess.start(config);
    await daemon.waitFor(
      /lost: the DR site's replica lost is primary\/promoted .*; no more attempts for this disk/,
    );
    const from = daemon.log.length;
    await daemon.waitFor(/kept: cycle \d+ confirmed[^]*kept: cycle \d+ confirmed/, from);
    assert.equal(daemon.log.match(/lost: /g)!.length, 1, daemon.log);
    assert.doesNotMatch(daemon.log, /retry|Broken pipe/);
    assert.equal(await daemon.stop(), 0);
  } finally {
    await daemon.stop();
    await receiver.stop();
    await qsd.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("replication daemon: three QEMUs' disks under one state dir, 20 cycles each, none fails", async () => {
  // No NBD server runs in these QEMUs: each disk's attempt starts its own, on a path of its own.
  const patterns = [0x31, 0x32, 0x33];
  const qsds = await Promise.all(
    patterns.map((pattern) =>
      Qsd.start({
        disks: [{ size: 4 * MiB, writes: [{ pattern, offset: 0, length: MiB }] }],
        guestNbd: false,
      })
    ),
  );
  const { dir, receiver, config } = await daemonBed(
    "dirtybit-daemon3-",
    { cycle_interval: 1 },
    qsds.map((q, i) => ({ name: `d${i}`, node: "disk0", qmp: q.qmpSocket })),
  );
  const daemon = DaemonProcess.start(config);
  try {
    for (let i = 0; i < 3; i++) {
      await daemon.waitFor(new RegExp(`d${i}: cycle 20 confirmed`), 0, 60_000);
    }
    assert.equal(await daemon.stop(), 0);
    const lines = daemon.log.split("\n").filter((l) => /^d\d: /.test(l.replace(/^\S+ /, "")));
    const bad = lines.filter((l) => !/: (seeded|cycle \d+ confirmed)/.test(l));
    assert.deepEqual(bad, [], daemon.log);
    for (const [i, pattern] of patterns.entries()) {
      // The disk as written before the start (no guest writes since).
      const expected = new Uint8Array(4 * MiB);
      expected.fill(pattern, 0, MiB);
      await Deno.writeFile(join(dir, `d${i}.raw`), expected);
      assert.ok(await imagesEqual(join(dir, `d${i}.raw`), join(dir, "dr", `d${i}.qcow2`)));
    }
  } finally {
    await daemon.stop();
    await receiver.stop();
    await Promise.all(qsds.map((q) => q.stop()));
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("replication daemon: a bad configuration is one line naming the key", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-daemon-" });
  try {
    const config = join(dir, "bad.json");
    await Deno.writeTextFile(
      config,
      JSON.stringify({
        disks: [{
          name: "a",
          qmp: "/q",
          node: "n",
          dr_host: "h",
          psk_file: "/p",
          cycle_interval: "x",
        }],
      }),
    );
    const r = await cli(["replicate", "daemon", "--config", config]);
    assert.equal(r.code, 2);
    assert.equal(r.stderr.trim().split("\n").length, 1);
    assert.match(r.stderr, /bad\.json: disks\[0\] \(a\): parameter cycle_interval='x'/);
    const missing = await cli(["replicate", "daemon", "--config", join(dir, "none.json")]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /none\.json cannot be read/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
