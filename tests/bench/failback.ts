/**
 * Failback benchmark (issue 18): after an unplanned failover of a disk full
 * of random data, 10 MiB change at the DR site and 5 MiB at the returning
 * original site; `failback pre` must send about those 15 MiB (bytes on the
 * wire / (changed + divergent) ≤ 1.1) in a fraction of the time of a full
 * resync of the disk (a seed of the DR disk into an empty replica over the
 * same channel; ≤ 0.2). 1 GiB rather than the 2 GiB: the full
 * resync it is measured against takes about 30 s on a shared 2-core machine.
 * Real qemu-storage-daemons, in-process receivers and use cases. Run alone:
 * `deno run -A tests/bench/failback.ts [BYTES]`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { RoleError } from "../../lib/core/errors.ts";
import { NbdClient } from "../../lib/nbd/client.ts";
import { StorageDaemon } from "../../lib/qemu/storage_daemon.ts";
import { QmpSocket } from "../../lib/qemu/qmp.ts";
import { failbackPre, failoverExec } from "../../lib/replication/failover.ts";
import { pushCycle, seedDisk } from "../../lib/replication/sender.ts";
import type { ReplicatedDisk } from "../../lib/replication/sender_state.ts";
import { fillRandom } from "../fixtures/bytes.ts";
import { atMost, type BenchRow } from "./table.ts";
import { randomQcow2, seconds } from "./measure.ts";
import { benchReceiver } from "./replication.ts";

const MiB = 1 << 20;

/** A site: a qemu-storage-daemon on one image, node disk0, export vm. */
async function site(image: string, dir: string) {
  await Deno.mkdir(join(dir, "work"), { recursive: true });
  const daemon = await StorageDaemon.start({
    disks: [{ node: "disk0", image, exportName: "vm" }],
    qmpSocket: join(dir, "qmp.sock"),
    nbdSocket: join(dir, "nbd.sock"),
  });
  const qmp = await QmpSocket.connect(join(dir, "qmp.sock"));
  return {
    daemon,
    qmp,
    disk: (name: string, stateDir: string): ReplicatedDisk => ({
      qmp,
      node: "disk0",
      name,
      stateDir,
      workDir: join(dir, "work"),
      nbdSocket: join(dir, "nbd.sock"),
    }),
    /** Writes `mib` MiB of random data in 1 MiB writes spread over the disk, `shift` on. */
    async scatter(mib: number, size: number, shift: number): Promise<void> {
      const client = await NbdClient.connect({ uri: `nbd+unix:///vm?socket=${dir}/nbd.sock` });
      const buf = new Uint8Array(MiB);
      for (let i = 0; i < mib; i++) {
        await client.pwrite(fillRandom(buf), Math.floor((i * size / mib + shift) / MiB) * MiB);
      }
      await client.flush();
      await client.close();
    },
    async stop(kill = false): Promise<void> {
      await qmp.close().catch(() => {});
      await (kill ? daemon.kill() : daemon.quit());
    },
  };
}

/** Runs the failback benchmark in `dir` on a disk of `diskSize` bytes. */
export async function benchFailback(dir: string, diskSize = 1 << 30): Promise<BenchRow[]> {
  const changed = 10;
  const divergent = 5;
  const imageA = join(dir, "failback-a.qcow2");
  const stateA = join(dir, "failback-a-state");
  const dirB = join(dir, "failback-b");
  await randomQcow2(imageA, diskSize);
  const recvB = await benchReceiver(dirB);
  let a = await site(imageA, join(dir, "failback-vm-a"));
  await seedDisk(a.disk("vda", stateA), recvB.target);
  await a.stop(true); // site A is lost
  await recvB.receiver.stop();
  await failoverExec({ name: "vda", replicaDir: dirB, memoryMiB: 1024, cpus: 1, force: true });
  const b = await site(join(dirB, "vda.qcow2"), join(dir, "failback-vm-b"));
  const recvBAgain = await benchReceiver(dirB);
  try {
    await b.scatter(changed, diskSize, 0);
    // A returns, writes on, and its first cycle finds the replica promoted.
    a = await site(imageA, join(dir, "failback-vm-a2"));
    // Apart from B's writes: the sum is what differs.
    await a.scatter(divergent, diskSize, diskSize / 20);
    await assert.rejects(pushCycle(a.disk("vda", stateA), recvBAgain.target), RoleError);
    await a.stop();
    const recvA = await benchReceiver(stateA);
    let wire = 0;
    const failback = await seconds(async () => {
      const r = await failbackPre({
        disk: b.disk("vda", dirB),
        target: recvA.target,
        compressLevel: 3,
      });
      wire = r.stats.wireBytes;
    });
    await recvA.receiver.stop();
    // The reference: a full resync of the DR disk into an empty replica.
    const recvFull = await benchReceiver(join(dir, "failback-full"));
    const full = await seconds(() =>
      seedDisk(b.disk("full", join(dir, "failback-full-state")), recvFull.target)
    );
    await recvFull.receiver.stop();
    const what = `failback pre, ${changed} MiB changed at DR + ${divergent} MiB divergent at A of ${
      diskSize / MiB
    } MiB`;
    return [
      atMost(
        `${what}: bytes on the wire / (changed + divergent)`,
        `${(wire / MiB).toFixed(2)} MiB`,
        `${changed + divergent} MiB`,
        wire / ((changed + divergent) * MiB),
        1.1,
      ),
      atMost(
        `${what}: time / full resync of the disk`,
        `${failback.toFixed(2)} s`,
        `${full.toFixed(2)} s`,
        failback / full,
        0.2,
      ),
    ];
  } finally {
    await recvBAgain.receiver.stop();
    await b.stop();
    for (const p of [imageA, stateA, dirB, join(dir, "failback-full")]) {
      await Deno.remove(p, { recursive: true }).catch(() => {});
    }
  }
}

if (import.meta.main) {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-bench-" });
  try {
    const size = Number(Deno.args[0] ?? 1 << 30);
    for (const row of await benchFailback(dir, size)) console.log(JSON.stringify(row));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
