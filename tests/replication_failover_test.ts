/**
 * Failover -> failback -> reprotect round trip with real QEMU on both sites
 * (qemu-storage-daemon as each site's VM), receivers as processes: the
 * original disk and the DR disk end identical (`qemu-img compare`), the
 * failback sends only the blocks written at the DR site, reprotect needs no
 * full copy, and steps run from the wrong state are refused with the reason.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { cli, FailoverBed, imagesEqual, ok, refused } from "./replication/sites.ts";

const MiB = 1 << 20;

Deno.test("replication: failover, failback and reprotect round trip", async () => {
  const bed = await FailoverBed.create("dirtybit-failover-");
  const { root, stateA, dirB, imageA, stopped, receiver, vm, sender } = bed;
  try {
    // Normal operation: A replicates to B.
    let vmA = await vm(imageA, "vm-a");
    const recvB = await receiver(dirB);
    const toB = sender(vmA, recvB.port, stateA);
    ok(await cli(["replicate", "seed", ...toB]));
    await vmA.write(0x21, 8 * MiB, MiB);
    ok(await cli(["replicate", "push", "--once", ...toB]));

    // Wrong steps for a disk that is simply replicating.
    refused(
      await cli(["failback", "pre", ...sender(vmA, recvB.port, dirB)]),
      /disk vda is replica\/replicating: failback pre .* needs primary\/promoted/,
    );
    refused(
      await cli(["reprotect", ...toB]),
      /disk vda is primary\/replicating: reprotect from this side needs primary\/fenced or primary\/promoted/,
    );

    // failover pre at A: final cycle, fenced.
    await vmA.write(0x22, 12 * MiB, MiB);
    const pre = ok(await cli(["failover", "pre", ...toB]));
    assert.match(pre.stderr, /final cycle 2 confirmed .*fenced/);
    refused(
      await cli(["replicate", "push", "--once", ...toB]),
      /disk vda is primary\/fenced since failover pre at .*: replication cycles from this side needs primary\/replicating/,
    );
    const atFailover = await vmA.snapshot(join(root, "at-failover.raw"));
    await stopped(vmA);

    // failover exec at B: the replica is the VM's disk now.
    const exec = ok(await cli(["failover", "exec", "--name", "vda", "--replica-dir", dirB]));
    assert.match(exec.stderr, /replica promoted at cycle 2/);
    const replicaB = join(dirB, "vda.qcow2");
    assert.ok(await imagesEqual(atFailover, replicaB));
    assert.match(
      await Deno.readTextFile(join(dirB, "vda.qemu.sh")),
      /qemu-system-x86_64[^]*vda\.qcow2,format=qcow2/,
    );
    assert.match(
      await Deno.readTextFile(join(dirB, "vda.xml")),
      /<source file='[^']*vda\.qcow2'\/>/,
    );
    // A rerun (say after a crash right at the end) changes nothing and says so.
    assert.match(
      ok(await cli(["failover", "exec", "--name", "vda", "--replica-dir", dirB])).stderr,
      /replica already promoted at cycle 2/,
    );

    // The VM runs at B and writes.
    const vmB = await vm(replicaB, "vm-b");
    await vmB.write(0x31, 2 * MiB, MiB);
    await vmB.write(0x32, 20 * MiB, MiB);

    // failback pre: a receiver at A serves A's own disk; only B's writes travel.
    const recvA = await receiver(stateA);
    const toA = sender(vmB, recvA.port, dirB);
    const fb = ok(await cli(["failback", "pre", ...toA]));
    assert.match(
      fb.stderr,
      // The promotion's bitmaps and A's divergent ranges (none): only B's writes are read.
      /original primary resynced: 2097152 bytes compared, 0 equal, 2097152 sent as data/,
    );
    assert.match(fb.stderr, /the original site wrote nothing after its last cycle/);
    assert.ok(await imagesEqual(await vmB.snapshot(join(root, "fb-pre.raw")), imageA));
    await vmB.write(0x33, 24 * MiB, MiB);
    const push = ok(await cli(["replicate", "push", "--once", ...toA]));
    assert.match(push.stderr, /cycle 1 confirmed: 1048576 bytes dirty/);
    refused(
      await cli(["reprotect", ...sender(vmB, recvB.port, stateA)]),
      /disk vda is replica\/replicating .*: reprotect from this side needs/,
    );

    // failback exec: final cycle B -> A, A is the primary again.
    await vmB.write(0x34, 28 * MiB, MiB);
    const fx = ok(await cli(["failback", "exec", ...toA]));
    assert.match(fx.stderr, /final cycle 2 confirmed; the original site is primary\/promoted/);
    // A rerun finds the promotion done and changes nothing.
    assert.match(ok(await cli(["failback", "exec", ...toA])).stderr, /final cycle 2 confirmed/);
    vmA = await bed.backAtA(vmB, recvA);

    // reprotect at A: replication A -> B again, from the bitmap the promotion
    // added, not from a full copy.
    const rp = ok(await cli(["reprotect", ...sender(vmA, recvB.port, stateA)]));
    assert.match(
      rp.stderr,
      /reprotected at cycle 2: this side primary\/replicating, the other replica\/replicating/,
    );
    const again = ok(
      await cli(["replicate", "push", "--once", ...sender(vmA, recvB.port, stateA)]),
    );
    assert.match(again.stderr, /cycle 3 confirmed: 1048576 bytes dirty/);
    const end = await vmA.snapshot(join(root, "end.raw"));
    assert.ok(await imagesEqual(end, replicaB), "after the round trip the disks are identical");
  } finally {
    await bed.cleanup();
  }
});
