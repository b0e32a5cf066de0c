/**
 * Every file dirtybit creates is a copy of a VM disk or holds its chain state:
 * whatever a backup, a restore, a receiver and a sender (seed and push)
 * leave behind is 0600 in 0700 directories, through the real command line.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ReceiverProcess, Sites } from "./replication/sites.ts";
import { dirtybitOk } from "./fixtures/cli.ts";
import { assertPrivate } from "./fixtures/modes.ts";

Deno.test("files a backup, restore, receiver and sender create are 0600 in 0700 dirs", async () => {
  const sites = await Sites.start(8 << 20);
  const receiver = await ReceiverProcess.start(sites.receiverArgs());
  try {
    const qsd = sites.qsd;
    const state = join(sites.dir, "backup-state");
    const out = join(sites.dir, "streams");
    const backup = [
      "backup",
      "--qmp",
      qsd.qmpSocket,
      "--node",
      qsd.disks[0].node,
      "--nbd-socket",
      qsd.nbdSocket,
      "--state-dir",
      state,
      "--out",
      out,
    ];
    await Deno.mkdir(out);
    await dirtybitOk(backup);
    await sites.randomWrite(1 << 20, 1 << 20);
    await dirtybitOk(backup);
    const streams = [...Deno.readDirSync(out)].map((e) => join(out, e.name)).sort();
    assert.equal(streams.length, 2);
    const restored = join(sites.dir, "restored");
    await Deno.mkdir(restored);
    await dirtybitOk(["restore", "--out", join(restored, "d.raw"), ...streams]);
    await dirtybitOk([
      "restore",
      "--out",
      join(restored, "d.qcow2"),
      "--format",
      "qcow2",
      ...streams,
    ]);

    assert.equal((await sites.send("seed", receiver.port)).code, 0);
    await sites.randomWrite(3 << 20, 1 << 20);
    assert.equal((await sites.send("push", receiver.port, ["--once"])).code, 0);

    // The output directories were made by the test (0755): only what dirtybit put there counts.
    assert.ok(await assertPrivate(out, false) >= 2);
    assert.ok(await assertPrivate(restored, false) >= 2);
    assert.ok(await assertPrivate(state) > 2);
    assert.ok(await assertPrivate(sites.stateDir) > 2);
    assert.ok(await assertPrivate(sites.replicaDir) > 2);
  } finally {
    await receiver.stop();
    await sites.stop();
  }
});
