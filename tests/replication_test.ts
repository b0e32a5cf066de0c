/**
 * Replication end to end: a real qemu-storage-daemon as the source, the
 * receiver as a separate process keeping a qcow2 replica, the sender CLI;
 * crashes at named points; the channel's defences against wrong keys and
 * tampered, replayed and truncated frames; the bandwidth limit.
 */
import assert from "node:assert/strict";
import { ReceiverProcess, Sites } from "./replication/sites.ts";
import { delay } from "../lib/core/async.ts";
import { assertOneLineError } from "./fixtures/cli.ts";

const DISK = 32 << 20;

/** Scattered 1 MiB writes, so a cycle has more records than the crash points' threshold. */
async function scatter(sites: Sites, pattern: number, count = 12): Promise<void> {
  for (let i = 0; i < count; i++) {
    await sites.qsd.guestWrite(0, (pattern + i) & 0xff, (i * 2 + 4) << 20, 1 << 20);
  }
}

Deno.test("replication: seed, cycles with guest writes, crashes, restarts", async (t) => {
  const sites = await Sites.start(DISK);
  let receiver = await ReceiverProcess.start(sites.receiverArgs());
  try {
    await t.step(
      "seed copies the disk; status shows it seeding; a second seed is a no-op",
      async () => {
        // Random data, so compression cannot shrink it under the limit: 3 MiB at
        // 256 KB/s lasts long enough for status (a process start of its own) to see
        // the seed running even on a loaded machine.
        await sites.randomWrite(0, 3 << 20);
        const before = await sites.snapshot("seed");
        const seed = sites.send("seed", receiver.port, ["--bandwidth-limit", "256KB"]);
        let done = false;
        seed.finally(() => done = true);
        const phases = new Set<string>();
        while (!done) {
          const replicaStarted = await Deno.stat(`${sites.replicaDir}/vda.qcow2`).then(
            () => true,
            () => false,
          );
          const status = await sites.cliStatus(["--state-dir", sites.stateDir, "--json"]);
          // Before the seed made its state directory, status says it does not exist.
          if (status.code !== 0) {
            assert.match(status.stderr, /state-dir .* does not exist/, status.stderr);
            assert.ok(!replicaStarted, status.stderr);
          }
          const rows = status.code === 0 ? JSON.parse(status.stdout) : [];
          if (replicaStarted && !done) {
            assert.equal(rows.length, 1, `status while the seed runs: ${status.stdout}`);
          }
          for (const row of rows) phases.add(row.phase);
          await delay(100);
        }
        assert.ok(phases.has("seeding"), [...phases].join());
        const r = await seed;
        assert.equal(r.code, 0, r.stderr);
        assert.ok(await sites.replicaEquals(before));
        // The receiver runs for months: every line of its log says when.
        for (const line of receiver.log.split("\n").filter(Boolean)) {
          assert.match(line, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z dirtybit replicate: /);
        }
        const again = await sites.send("seed", receiver.port);
        assert.equal(again.code, 0, again.stderr);
        assert.match(again.stderr, /already seeded/);
      },
    );

    await t.step("a cycle sends only what the guest wrote", async () => {
      await sites.qsd.guestWrite(0, 0x22, 10 << 20, 1 << 20);
      await sites.qsd.guestWriteZeroes(0, 0, 1 << 20);
      const now = await sites.snapshot("c1");
      const r = await sites.send("push", receiver.port, ["--once"]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /cycle 1 confirmed: 2097152 bytes dirty/);
      assert.ok(await sites.replicaEquals(now));
    });

    await t.step("a block rewritten with the data the replica has is not sent (L2)", async () => {
      await sites.qsd.guestWrite(0, 0x22, 10 << 20, 1 << 20);
      await sites.qsd.guestWrite(0, 0x23, 12 << 20, 64 << 10);
      const now = await sites.snapshot("l2");
      const r = await sites.send("push", receiver.port, ["--once"]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /cycle 2 confirmed: 1114112 bytes dirty, 1048576 unchanged/);
      assert.ok(await sites.replicaEquals(now));
    });

    await t.step(
      "guest writes during cycles: the replica is always some source state",
      async () => {
        const snapshots = [await sites.snapshot("w0")];
        const push = sites.send("push", receiver.port, ["--cycles", "3", "--cycle-interval", "1"]);
        for (let i = 1; i <= 6; i++) {
          await sites.qsd.guestWrite(0, 0x30 + i, (i % 4) << 20, 1 << 20);
          snapshots.push(await sites.snapshot(`w${i}`));
          await delay(300);
        }
        const r = await push;
        assert.equal(r.code, 0, r.stderr);
        const matches = await Promise.all(snapshots.map((s) => sites.replicaEquals(s)));
        assert.ok(matches.includes(true), "replica equals none of the source states");
        const last = await sites.send("push", receiver.port, ["--once"]);
        assert.equal(last.code, 0, last.stderr);
        assert.ok(await sites.replicaEquals(snapshots[snapshots.length - 1]));
      },
    );

    const points = ["journal-midway", "journal-synced", "journal-committed", "apply-midway"];
    for (const [index, point] of points.entries()) {
      await t.step(
        `receiver crash at ${point}: consistent after restart, next cycle catches up`,
        async () => {
          const before = await sites.snapshot(`${point}-before`);
          await receiver.stop();
          receiver = await ReceiverProcess.start(sites.receiverArgs(), {
            crashAt: point,
          });
          // New data every time: rewriting what the replica has would be dropped by L2.
          await scatter(sites, 0x40 + 16 * index);
          const during = await sites.snapshot(`${point}-during`);
          const r = await sites.send("push", receiver.port, ["--once"]);
          assert.notEqual(r.code, 0, "the cycle cannot be confirmed by a crashed receiver");
          assert.equal(await receiver.exited(), 86);
          receiver = await ReceiverProcess.start(sites.receiverArgs());
          // A journal committed before the crash is replayed, anything else discarded.
          const replayed = point === "journal-committed" || point === "apply-midway";
          assert.match(receiver.log, replayed ? /replayed the journal/ : /discarded the journal/);
          assert.ok(await sites.replicaEquals(replayed ? during : before));
          await sites.qsd.guestWrite(0, 0x77, 30 << 20, 1 << 20);
          const after = await sites.snapshot(`${point}-after`);
          const next = await sites.send("push", receiver.port, ["--once"]);
          assert.equal(next.code, 0, next.stderr);
          assert.ok(await sites.replicaEquals(after));
        },
      );
    }

    await t.step("sender killed during send: nothing lost, next cycle catches up", async () => {
      await sites.randomWrite(8 << 20, 4 << 20);
      const stateBefore = await Deno.readTextFile(`${sites.stateDir}/vda.replication.json`);
      await sites.killSenderAfter(2500, "push", receiver.port, [
        "--once",
        "--bandwidth-limit",
        "1MB",
      ]);
      assert.equal(
        await Deno.readTextFile(`${sites.stateDir}/vda.replication.json`),
        stateBefore,
        "a killed cycle must not be confirmed",
      );
      const now = await sites.snapshot("killed-sender");
      const r = await sites.send("push", receiver.port, ["--once"]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(await sites.replicaEquals(now));
    });

    await t.step(
      "receiver unreachable: the sender fails, the bitmap keeps accumulating",
      async () => {
        const port = receiver.port;
        await receiver.stop();
        await sites.qsd.guestWrite(0, 0x55, 14 << 20, 1 << 20);
        const r = await sites.send("push", port, ["--once"]);
        assert.equal(r.code, 6, r.stderr);
        assert.match(r.stderr, /cannot reach the replication receiver/);
        receiver = await ReceiverProcess.start(sites.receiverArgs());
        await sites.qsd.guestWrite(0, 0x56, 16 << 20, 1 << 20);
        const now = await sites.snapshot("unreachable");
        const ok = await sites.send("push", receiver.port, ["--once"]);
        assert.equal(ok.code, 0, ok.stderr);
        assert.match(ok.stderr, /2097152 bytes dirty/);
        assert.ok(await sites.replicaEquals(now));
      },
    );

    await t.step("status reports per disk: sender state and receiver", async () => {
      const local = await sites.cliStatus(["--state-dir", sites.stateDir, "--json"]);
      const rows = JSON.parse(local.stdout);
      assert.equal(rows[0].name, "vda");
      assert.ok(rows[0].confirmedCycle >= 5);
      assert.ok(rows[0].errors >= 1);
      const prom = await sites.cliStatus(["--state-dir", sites.stateDir, "--prometheus"]);
      assert.match(prom.stdout, /dirtybit_replication_lag_seconds\{disk="vda"\}/);
      const remote = await sites.cliStatus([
        "--dr",
        `127.0.0.1:${receiver.port}`,
        "--psk-file",
        sites.pskFile,
        "--json",
      ]);
      const [dr] = JSON.parse(remote.stdout);
      assert.equal(dr.confirmedCycle, rows[0].confirmedCycle);
      // The receiver's own record: when it applied the last cycle, what it received, what failed.
      assert.ok(Date.parse(dr.confirmedAt) <= Date.now() && dr.lagSeconds >= 0, remote.stdout);
      assert.equal(dr.cycles, dr.confirmedCycle, remote.stdout);
      assert.ok(dr.dirtyBytes > 0 && dr.wireBytes > dr.payloadBytes, remote.stdout);
      assert.ok(dr.errors >= 1 && dr.lastError, remote.stdout);
    });

    await t.step("wrong and short pre-shared keys are refused", async () => {
      const wrong = `${sites.dir}/wrong-psk`;
      await Deno.writeTextFile(wrong, "a different key that is long enough!!", { mode: 0o600 });
      const r = await sites.cliStatus(["--dr", `127.0.0.1:${receiver.port}`, "--psk-file", wrong]);
      assert.equal(r.code, 3);
      assert.match(r.stderr, /pre-shared keys differ/);
      assert.doesNotMatch(r.stderr, /different key/);
      await new Promise((res) => setTimeout(res, 200));
      assert.match(receiver.log, /pre-shared keys differ/);
      const short = `${sites.dir}/short-psk`;
      await Deno.writeTextFile(short, "tooshort", { mode: 0o600 });
      const s = await sites.cliStatus(["--dr", `127.0.0.1:${receiver.port}`, "--psk-file", short]);
      assert.equal(s.code, 2);
      assert.match(s.stderr, /at least 32/);
      assert.doesNotMatch(s.stderr, /tooshort/);
      const open = `${sites.dir}/open-psk`;
      await Deno.writeTextFile(open, "a key that others on this host could read!!", {
        mode: 0o644,
      });
      await Deno.chmod(open, 0o644);
      const o = await sites.cliStatus(["--dr", `127.0.0.1:${receiver.port}`, "--psk-file", open]);
      assertOneLineError(o, 2, `run 'chmod 600 ${open}'`);
      const literal = "a key typed on the command line, long enough";
      const l = await sites.cliStatus(["--dr", `127.0.0.1:${receiver.port}`, "--psk", literal]);
      assertOneLineError(l, 2, "--psk is refused: a key on the command line is visible");
      assert.doesNotMatch(l.stderr, /typed on the command line/);
    });

    await t.step("SIGTERM stops the receiver cleanly", async () => {
      assert.equal(await receiver.stop(), 0);
    });
  } finally {
    await receiver.stop();
    await sites.stop();
  }
});

Deno.test("replication: raw replicas", async () => {
  const sites = await Sites.start(16 << 20);
  const receiver = await ReceiverProcess.start(sites.receiverArgs("raw"));
  try {
    assert.equal((await sites.send("seed", receiver.port)).code, 0);
    await sites.qsd.guestWrite(0, 0x99, 5 << 20, 2 << 20);
    await sites.qsd.guestWriteZeroes(0, 1 << 20, 1 << 20);
    const now = await sites.snapshot("raw");
    const r = await sites.send("push", receiver.port, ["--once"]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(await sites.replicaEquals(now, "raw"));
  } finally {
    await receiver.stop();
    await sites.stop();
  }
});
