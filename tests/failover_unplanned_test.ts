/**
 * Unplanned failover and the way back, with real QEMU at both sites
 * (qemu-storage-daemon as each site's VM) and receivers as processes: site A
 * is lost (its QEMU killed), the DR site B promotes its last confirmed cycle
 * with --force, A returns with writes of its own, its sender is refused (no
 * retries) and fences A, failback pre keeps A's divergent writes aside and
 * sends only the differing blocks, failback exec and reprotect finish, and
 * replication A -> B goes on. Every step is also killed (SIGKILL at its most
 * delicate points; failback pre also at A's receiver) and rerun; the two
 * sides are never both an unfenced primary.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadRole } from "../lib/replication/role_file.ts";
import { loadSenderState } from "../lib/replication/sender_state.ts";
import { cli, FailoverBed, imagesEqual, ok, refused, spawnCli } from "./replication/sites.ts";
import { run } from "./helpers.ts";
import { exists, killWhen } from "./fixtures/kills.ts";

const MiB = 1 << 20;

/** A run SIGKILLed at crash point `point` (the step's own hook). */
async function killedAt(point: string, args: string[]): Promise<void> {
  const r = await cli(args, { crashAt: point });
  assert.equal(r.code, 137, `expected a SIGKILL at ${point}: ${r.code} ${r.stderr}`);
}

Deno.test("replication: unplanned failover, fencing of the returning source, failback and reprotect", async () => {
  const bed = await FailoverBed.create("dirtybit-unplanned-");
  const { root, psk, stateA, dirB, imageA, stopped, receiver, vm, sender } = bed;
  const replicaB = join(dirB, "vda.qcow2");
  /** The roles at both sites, from their role files; never both an unfenced primary. */
  const roles = async (): Promise<[string, string]> => {
    const a = await loadRole(stateA, "vda", "primary");
    const b = await loadRole(dirB, "vda", "replica");
    const pair: [string, string] = [`${a.role}/${a.state}`, `${b.role}/${b.state}`];
    const active = (r: typeof a) => r.role === "primary" && r.state !== "fenced";
    assert.ok(!(active(a) && active(b)), `both primary: ${pair}`);
    return pair;
  };
  try {
    // Normal operation: A replicates to B, two cycles.
    let vmA = await vm(imageA, "vm-a");
    const recvB = await receiver(dirB);
    const toB = (retries = 0) => sender(vmA, recvB.port, stateA, retries);
    ok(await cli(["replicate", "seed", ...toB()]));
    await vmA.write(0x21, 8 * MiB, MiB);
    ok(await cli(["replicate", "push", "--once", ...toB()]));
    await vmA.write(0x22, 12 * MiB, MiB);
    ok(await cli(["replicate", "push", "--once", ...toB()]));
    const atCycle2 = await vmA.snapshot(join(root, "at-cycle-2.raw"));

    // A writes after its last cycle, then site A is lost with a cycle in flight.
    await vmA.write(0x51, 16 * MiB, MiB);
    await vmA.writeRandom(17 * MiB, MiB);
    const inFlight = spawnCli([
      "replicate",
      "push",
      "--once",
      ...toB(),
      "--bandwidth-limit",
      "256KB",
    ]);
    // Mid-transfer: the receiver is journaling the cycle.
    await killWhen(inFlight, "a cycle under way", () => exists(join(dirB, "vda.journal")), 300);
    bed.forget(vmA);
    await vmA.kill();

    // failover exec without a failover pre is refused, naming --force.
    const exec = ["failover", "exec", "--name", "vda", "--replica-dir", dirB];
    const noForce = await cli(exec);
    refused(noForce, /did not report itself fenced at cycle 2 .*failover exec and --force /);
    assert.match(noForce.stderr, /RPO: the last confirmed cycle 2 confirmed at /);
    // Killed after the start files, before the role: still a replica, the rerun promotes.
    await killedAt("start-files-written", [...exec, "--force"]);
    assert.deepEqual(await roles(), ["primary/replicating", "replica/replicating"]);
    const forced = ok(await cli([...exec, "--force"]));
    assert.match(
      forced.stderr,
      /promoted without fencing the source: RPO: the last confirmed cycle 2 confirmed at \S+ \(\d+ s ago\), which changed 1048576 bytes/,
    );
    assert.match(forced.stderr, /replica promoted at cycle 2/);
    assert.ok(await imagesEqual(atCycle2, replicaB), "B promoted exactly cycle 2");
    assert.equal((await loadRole(dirB, "vda", "replica")).unfenced, true);

    // The VM runs at B and writes 2 MiB.
    const vmB = await vm(replicaB, "vm-b");
    await vmB.write(0x61, 2 * MiB, MiB);
    await vmB.write(0x62, 20 * MiB, MiB);

    // A returns (its QEMU had been killed) and writes on; its sender is refused at
    // once (retries allowed, none made) and fences A.
    vmA = await vm(imageA, "vm-a2");
    await vmA.write(0x52, 24 * MiB, MiB);
    const pushA = await cli(["replicate", "push", "--once", ...toB(3)]);
    refused(
      pushA,
      /the DR site's replica vda is primary\/promoted since failover exec at \S+, cycle 2, promoted without fencing this site: it takes no cycles from here; this disk is fenced now \(primary\/fenced\): what it wrote after cycle 2 stays here; run 'dirtybit failback pre' at the DR site/,
    );
    assert.doesNotMatch(pushA.stderr, /retry|Broken pipe/);
    assert.deepEqual(await roles(), ["primary/fenced", "primary/promoted"]);
    refused(
      await cli(["replicate", "push", "--once", ...toB()]),
      /disk vda is primary\/fenced since fence at .*run 'dirtybit failback pre' there/,
    );
    const statusA = JSON.parse(
      ok(await cli(["replicate", "status", "--state-dir", stateA, "--json"])).stdout,
    );
    assert.equal(statusA[0].role, "primary/fenced");
    const statusB = JSON.parse(
      ok(
        await cli([
          "replicate",
          "status",
          "--dr",
          `127.0.0.1:${recvB.port}`,
          "--psk-file",
          psk,
          "--json",
        ]),
      ).stdout,
    );
    assert.equal(statusB[0].role, "primary/promoted");
    await stopped(vmA);

    // failback pre: a receiver at A serves A's disk. Killed after A applied the
    // resync, before B recorded it: A is a replica already, B still primary.
    let recvA = await receiver(stateA);
    let toA = sender(vmB, recvA.port, dirB);
    await killedAt("resynced", ["failback", "pre", ...toA]);
    assert.deepEqual(await roles(), ["replica/replicating", "primary/promoted"]);
    // Only the blocks that differ travelled: the 2 MiB written at B as data; A's
    // 2 MiB are unallocated at B, so they went as zero records.
    const resync = (await loadSenderState(dirB, "vda"))!.lastCycle!;
    assert.equal(resync.dataBytes, 2 * MiB, JSON.stringify(resync));
    assert.ok(resync.wireBytes < 2.2 * MiB, JSON.stringify(resync));
    const atResync = await vmB.snapshot(join(root, "at-resync.raw"));
    assert.ok(await imagesEqual(atResync, imageA), "A equals B after the resync");
    // A's own writes after cycle 2 were kept aside, and only they.
    const aside = (await loadRole(stateA, "vda", "replica")).aside!;
    assert.equal(aside, join(stateA, "vda.divergent-after-cycle-2.qcow2"));
    for (const [pattern, offset] of [[0x51, 16 * MiB], [0x52, 24 * MiB]]) {
      const read = await run("qemu-io", [
        "-f",
        "qcow2",
        "-r",
        "-c",
        `read -P ${pattern} ${offset} ${MiB}`,
        aside,
      ]);
      assert.doesNotMatch(read, /verification failed/, read);
    }
    const map = JSON.parse(
      await run("qemu-img", ["map", "--output=json", "-f", "qcow2", aside]),
    ) as { start: number; length: number; data: boolean }[];
    assert.deepEqual(
      map.filter((m) => m.data).map((m) => [m.start, m.length]),
      [[16 * MiB, 2 * MiB], [24 * MiB, MiB]],
    );
    assert.equal((await Deno.stat(aside)).mode! & 0o077, 0, "the aside is as private as the disk");
    // The rerun, with A's receiver killed once the resync is journaled at A:
    // A is resyncing, B still primary; A's restarted receiver replays it.
    await stopped(recvA);
    const crashing = await receiver(stateA, { crashAt: "journal-committed" });
    const cut = await cli(["failback", "pre", ...sender(vmB, crashing.port, dirB)]);
    assert.notEqual(cut.code, 0, cut.stderr);
    assert.equal(await crashing.exited(), 86);
    bed.forget(crashing);
    assert.deepEqual(await roles(), ["replica/resyncing", "primary/promoted"]);
    recvA = await receiver(stateA);
    toA = sender(vmB, recvA.port, dirB);
    assert.match(recvA.log, /vda: replayed the journal of cycle 0/);
    const fb = ok(await cli(["failback", "pre", ...toA]));
    assert.match(fb.stderr, /original primary resynced: .* 0 sent as data/);
    assert.deepEqual(await roles(), ["replica/replicating", "primary/replicating"]);

    // Cycles B -> A, then failback exec, killed after B stepped down: nobody primary.
    await vmB.write(0x63, 28 * MiB, MiB);
    assert.match(
      ok(await cli(["replicate", "push", "--once", ...toA])).stderr,
      /cycle 1 confirmed: 1048576 bytes dirty/,
    );
    await killedAt("demoted", ["failback", "exec", ...toA]);
    assert.deepEqual(await roles(), ["replica/replicating", "replica/fenced"]);
    // The rerun resumes with the promotion; killed right after it, A is the primary.
    await killedAt("promoted", ["failback", "exec", ...toA]);
    assert.deepEqual(await roles(), ["primary/promoted", "replica/fenced"]);
    const fx = ok(await cli(["failback", "exec", ...toA]));
    assert.match(fx.stderr, /the original site is primary\/promoted, this side replica\/fenced/);
    assert.deepEqual(await roles(), ["primary/promoted", "replica/fenced"]);
    const atFailback = await vmB.snapshot(join(root, "at-failback.raw"));
    await stopped(vmB);
    await stopped(recvA);
    assert.ok(await imagesEqual(atFailback, imageA), "A equals B at failback exec");

    // reprotect at A, killed after B became A's replica again, before A recorded it.
    vmA = await vm(imageA, "vm-a3");
    await killedAt("remote-reprotected", ["reprotect", ...toB()]);
    assert.deepEqual(await roles(), ["primary/promoted", "replica/replicating"]);
    assert.match(
      ok(await cli(["reprotect", ...toB()])).stderr,
      /reprotected at cycle 2: this side primary\/replicating, the other replica\/replicating/,
    );
    assert.deepEqual(await roles(), ["primary/replicating", "replica/replicating"]);
    await vmA.write(0x71, 30 * MiB, MiB);
    assert.match(
      ok(await cli(["replicate", "push", "--once", ...toB()])).stderr,
      /cycle 3 confirmed: 1048576 bytes dirty/,
    );
    const end = await vmA.snapshot(join(root, "end.raw"));
    assert.ok(await imagesEqual(end, replicaB), "after the way back the disks are identical");
  } finally {
    await bed.cleanup();
  }
});
