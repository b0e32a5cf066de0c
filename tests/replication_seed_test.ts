/**
 * Seed resume: a seed interrupted by a failure the sender catches (here the
 * receiver dies in the middle of a window) resumes after the last confirmed
 * window, sending below it only what the guest changed meanwhile; the
 * replica then equals the source. A SIGKILLed seed cannot record where it
 * stopped and starts again from 0 (docs/replication-protocol.md, §8).
 */
import assert from "node:assert/strict";
import { ReceiverProcess, Sites } from "./replication/sites.ts";
import { run } from "./helpers.ts";

const MiB = 1 << 20;
const DISK = 32 * MiB;

/** 64 KiB of data every 256 KiB: many records per window. */
async function stripes(sites: Sites, pattern: number): Promise<void> {
  const commands: string[] = [];
  for (let off = 0; off < DISK; off += 256 << 10) {
    commands.push("-c", `write -P ${pattern} ${off} 64k`);
  }
  await run("qemu-io", ["-f", "raw", ...commands, sites.qsd.disks[0].uri]);
}

Deno.test("replication: an interrupted seed resumes where it stopped", async () => {
  const sites = await Sites.start(DISK);
  let receiver = await ReceiverProcess.start(sites.receiverArgs(), {
    crashAt: "seed-midway:2",
  });
  try {
    await stripes(sites, 0x31);
    const first = await sites.send("seed", receiver.port, ["--seed-window", "8"]);
    assert.notEqual(first.code, 0, "the receiver died in the second window");
    assert.equal(await receiver.exited(), 86);
    const state = JSON.parse(await Deno.readTextFile(`${sites.stateDir}/vda.replication.json`));
    assert.equal(state.seedOffset, 8 * MiB, "the first window is confirmed");
    assert.ok(state.checkpoint, "the point in time of the confirmed part is kept");

    // Meanwhile the guest writes below and above the confirmed offset.
    await sites.qsd.guestWrite(0, 0x42, 1 * MiB, 64 << 10);
    await sites.qsd.guestWrite(0, 0x43, 20 * MiB, 1 * MiB);
    const now = await sites.snapshot("resume");
    receiver = await ReceiverProcess.start(sites.receiverArgs());
    const second = await sites.send("seed", receiver.port, ["--seed-window", "8"]);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stderr, /seed resumes at 8388608, 65536 bytes changed below/);
    assert.match(second.stderr, /seeded \(resumed at 8388608\)/);
    assert.match(second.stderr, /\nreplicate seed of \S+ \(seed\): read .* MB\/s\n$/);
    assert.ok(await sites.replicaEquals(now));

    // The hash DB of the resumed seed describes the replica: rewriting the
    // same data is not sent (only the stripe at 1 MiB differs: 0x42 there).
    await stripes(sites, 0x31);
    await sites.qsd.guestWrite(0, 0x43, 20 * MiB, 1 * MiB);
    const again = await sites.snapshot("l2");
    const log = `${sites.stateDir}/push.log`;
    const push = await sites.send("push", receiver.port, ["--once", "--log-file", log]);
    assert.equal(push.code, 0, push.stderr);
    assert.match(push.stderr, /9175040 bytes dirty, 9109504 unchanged/);
    assert.match(
      push.stderr,
      /\nreplicate push of \S+ \(1 cycle\): read 8\.8 MiB, stored .* MB\/s\n/,
    );
    assert.ok(await sites.replicaEquals(again));
    // The log file has the same words, each line with its time.
    const logged = await Deno.readTextFile(log);
    const stamp = "\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z";
    assert.match(logged, new RegExp(`^${stamp} replicate push started\n`));
    assert.match(logged, new RegExp(`\n${stamp} vda: cycle 1 confirmed: 9175040 bytes dirty`));
    assert.match(
      logged,
      new RegExp(`\n${stamp} replicate push of \\S+ \\(1 cycle\\): read 8\\.8 MiB`),
    );

    // --quiet: nothing but errors; a bad --progress-interval is refused before anything is sent.
    const quiet = await sites.send("push", receiver.port, ["--once", "--quiet"]);
    assert.equal(quiet.code, 0, quiet.stderr);
    assert.equal(quiet.stderr, "");
    const bad = await sites.send("push", receiver.port, ["--once", "--progress-interval", "0"]);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /progress-interval/);
  } finally {
    await receiver.stop();
    await sites.stop();
  }
});

Deno.test("replication: a SIGKILLed seed starts again from 0 and completes", async () => {
  const sites = await Sites.start(DISK);
  const receiver = await ReceiverProcess.start(sites.receiverArgs());
  try {
    // Incompressible, so the bandwidth limit makes the seed last seconds.
    await sites.randomWrite(4 * MiB, 8 * MiB);
    await sites.killSenderAfter(2500, "seed", receiver.port, [
      "--seed-window",
      "4",
      "--bandwidth-limit",
      "2MB",
    ]);
    const now = await sites.snapshot("killed");
    const r = await sites.send("seed", receiver.port, ["--seed-window", "4"]);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /resumed/);
    assert.ok(await sites.replicaEquals(now));
  } finally {
    await receiver.stop();
    await sites.stop();
  }
});
