/**
 * Integration tests of `list`, `merge` and `prune`, driven as an operator
 * would: streams of real backups of qemu-storage-daemon disks, restores
 * compared with qemu-img, and a prune over 40 streams whose times are faked
 * (written with the stream writer, as a backup would over 40 days).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Qsd } from "./fixtures/qsd.ts";
import { assertOneLineError, assertSameImage, dirtybit, dirtybitOk } from "./fixtures/cli.ts";
import { StreamWriter } from "../lib/stream/writer.ts";

const KiB = 1 << 10;
const MiB = 1 << 20;

interface ListJson {
  chains: {
    dir: string;
    disk: string;
    broken: boolean;
    missing: string[];
    streams: { path: string; backupId: string; parentPresent: boolean | null }[];
    points: { backupId: string; restorable: boolean; streams: string[] | null }[];
  }[];
}

async function listJson(dirs: string[]): Promise<ListJson> {
  return JSON.parse(await dirtybitOk(["list", ...dirs, "--json"])) as ListJson;
}

/** Backs up `nodes` of `qsd` with state in `dir/state` into `dir/name`. */
async function backup(qsd: Qsd, dir: string, name: string, level = "auto"): Promise<void> {
  await dirtybitOk([
    "backup",
    ...qsd.sourceArgs(),
    ...["--state-dir", join(dir, "state"), "--out", join(dir, name), "--level", level],
  ]);
}

Deno.test("list: two VMs, three chains, one broken; --check fails on it", async () => {
  const a = await Qsd.start({ disks: [{ size: 8 * MiB }] });
  const b = await Qsd.start({ disks: [{ size: 8 * MiB }] });
  const root = await Deno.makeTempDir({ prefix: "dirtybit-test-" });
  const vmA = join(root, "vm-a");
  const vmB = join(root, "vm-b");
  try {
    await Deno.mkdir(vmA);
    await Deno.mkdir(vmB);
    await a.guestWrite(0, 0x11, 0, MiB);
    await backup(a, vmA, "a0.dbit");
    await a.guestWrite(0, 0x12, 2 * MiB, 64 * KiB);
    await backup(a, vmA, "a1.dbit");
    await backup(a, vmA, "a2.dbit", "full");
    await a.guestWrite(0, 0x13, 4 * MiB, 128 * KiB);
    await backup(a, vmA, "a3.dbit");
    await a.snapshotImage(0, join(root, "a3.raw"));
    await b.guestWrite(0, 0x21, MiB, MiB);
    await backup(b, vmB, "b0.dbit");
    await b.guestWrite(0, 0x22, 0, 64 * KiB);
    await backup(b, vmB, "b1.dbit");
    await b.guestWrite(0, 0x23, 6 * MiB, 64 * KiB);
    await backup(b, vmB, "b2.dbit");
    await Deno.remove(join(vmB, "b0.dbit")); // as Bacula's retention might
    await Deno.writeTextFile(join(vmB, "notes.txt"), "not a stream\n");

    const listing = await listJson([root]);
    assert.equal(listing.chains.length, 3);
    const [chainA1, chainA2, chainB] = listing.chains;
    assert.deepEqual(
      [chainA1, chainA2, chainB].map((c) => [c.dir, c.disk, c.broken, c.streams.length]),
      [[vmA, "disk0", false, 2], [vmA, "disk0", false, 2], [vmB, "disk0", true, 2]],
    );
    assert.equal(chainB.streams[0].parentPresent, false);
    assert.equal(chainB.streams[1].parentPresent, true);
    assert.equal(chainB.missing.length, 1);
    assert.ok(chainB.points.every((p) => !p.restorable));
    assert.deepEqual(chainA2.points.at(-1)!.streams, [join(vmA, "a2.dbit"), join(vmA, "a3.dbit")]);

    // The restore command list prints restores the point.
    const text = await dirtybitOk(["list", vmA]);
    const command = text.split("\n").find((l) => l.includes("a3.dbit") && l.includes("restore"))!;
    const args = command.slice(command.indexOf("dirtybit restore") + "dirtybit ".length).split(" ");
    args[2] = join(root, "a3-restored.raw");
    await dirtybitOk(args);
    await assertSameImage(join(root, "a3-restored.raw"), join(root, "a3.raw"));
    assert.match(text, /complete/);

    await dirtybitOk(["list", "--check", vmA]);
    const check = await dirtybit(["list", "--check", root]);
    assertOneLineError(check, 4, "1 broken chain");
    assert.match(check.stdout, /BROKEN: missing/);
    assert.match(check.stdout, /MISSING/);
  } finally {
    await a.stop();
    await b.stop();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("merge: full + 3 incrementals = restore of the chain; the next incremental applies on it", async () => {
  const qsd = await Qsd.start({
    disks: [{ size: 32 * MiB, writes: [{ pattern: 0x31, offset: 0, length: 8 * MiB }] }],
  });
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-test-" });
  const at = (name: string) => join(dir, name);
  try {
    await backup(qsd, dir, "s0.dbit");
    await qsd.guestWrite(0, 0x32, MiB, 3 * MiB);
    await backup(qsd, dir, "s1.dbit");
    await qsd.guestWriteZeroes(0, 2 * MiB, MiB);
    await qsd.guestWrite(0, 0x33, 20 * MiB, 640 * KiB);
    await backup(qsd, dir, "s2.dbit");
    await qsd.guestWrite(0, 0x34, 20 * MiB + 320 * KiB, 64 * KiB);
    await qsd.guestWrite(0, 0x35, 31 * MiB, MiB);
    await backup(qsd, dir, "s3.dbit");
    await qsd.snapshotImage(0, at("p3.raw"));
    const chain = [0, 1, 2, 3].map((i) => at(`s${i}.dbit`));

    const merged = JSON.parse(
      await dirtybitOk(["merge", ...chain, "--out", at("m3.dbit"), "--json"]),
    );
    assert.equal(merged.header.level, "full");
    assert.equal(merged.mergedFrom.length, 4);
    await dirtybitOk(["verify", at("m3.dbit")]);
    await dirtybitOk(["restore", "--out", at("chain.raw"), ...chain]);
    await dirtybitOk(["restore", "--out", at("merged.raw"), at("m3.dbit")]);
    await assertSameImage(at("merged.raw"), at("chain.raw"));
    await assertSameImage(at("merged.raw"), at("p3.raw"));
    // It holds only the last point's data: smaller than the streams it came from.
    const sizes = await Promise.all(chain.map(async (p) => (await Deno.stat(p)).size));
    assert.ok(merged.streamBytes < sizes.reduce((x, y) => x + y));

    // The next backup continues the chain; it applies on top of the merged full.
    await qsd.guestWrite(0, 0x36, 10 * MiB, 128 * KiB);
    await backup(qsd, dir, "s4.dbit");
    await qsd.snapshotImage(0, at("p4.raw"));
    await dirtybitOk(["restore", "--out", at("merged4.raw"), at("m3.dbit"), at("s4.dbit")]);
    await assertSameImage(at("merged4.raw"), at("p4.raw"));
    // With the old full gone, list restores point 4 from the merged full.
    await Deno.remove(at("s0.dbit"));
    const [c] = (await listJson([dir])).chains;
    assert.equal(c.broken, true, "s1..s3 lost their full, the merged full stands in for them");
    assert.deepEqual(c.points.at(-1)!.streams, [at("m3.dbit"), at("s4.dbit")]);

    // Refused: out of order, an existing --out.
    assertOneLineError(
      await dirtybit(["merge", chain[1], chain[2], "--out", at("x.dbit")]),
      4,
      "give its full backup first",
    );
    assertOneLineError(await dirtybit(["merge", ...chain, "--out", at("m3.dbit")]), 6, "exists");
    assert.equal(await Deno.stat(at("x.dbit.partial")).then(() => true, () => false), false);
  } finally {
    await qsd.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

// --- prune over 40 days of faked backups --------------------------------------------------------

const DISK = MiB;
const BLOCK = 64 * KiB;
const START = Date.UTC(2026, 9, 1, 2); // Thursday 1 October 2026, 02:00 UTC

/** Day d's backup: a full every 10 days, else an incremental writing one block. */
function dayWrite(d: number): { offset: number; data: Uint8Array } {
  return d % 10 === 0
    ? { offset: 0, data: new Uint8Array(DISK).fill(d + 1) }
    : { offset: ((d * 5) % 16) * BLOCK, data: new Uint8Array(BLOCK).fill(d + 1) };
}

/** The disk as of day `d`. */
function diskAt(d: number): Uint8Array {
  const disk = new Uint8Array(DISK);
  for (let day = d - (d % 10); day <= d; day++) {
    const w = dayWrite(day);
    disk.set(w.data, w.offset);
  }
  return disk;
}

async function writeDay(dir: string, d: number): Promise<void> {
  const full = d - (d % 10);
  const file = await Deno.open(join(dir, `day${String(d).padStart(2, "0")}.dbit`), {
    write: true,
    create: true,
  });
  const writer = new StreamWriter(file.writable, {
    disk: "vol-7",
    virtualSize: DISK,
    blockSize: BLOCK,
    level: d === full ? "full" : "incremental",
    backupId: `day${d}`,
    parentId: d === full ? null : `day${d - 1}`,
    chainId: `day${full}`,
    checkpoint: `day${d}`,
    createdAt: new Date(START + d * 86_400_000).toISOString(),
    compression: "zstd:1",
  }, { workers: 0 });
  const w = dayWrite(d);
  await writer.writeData(w.offset, w.data);
  await writer.finish();
}

/** Restores every point `list` shows under `dir` and compares it with the faked disk. */
async function assertPointsRestore(dir: string, days: number[]): Promise<void> {
  const points = (await listJson([dir])).chains.flatMap((c) => c.points);
  assert.deepEqual(points.map((p) => p.backupId).sort(), days.map((d) => `day${d}`).sort());
  for (const p of points) {
    const d = Number(p.backupId.slice(3));
    if (![17, 24, 30, 39].includes(d)) continue; // one per chain and the newest: enough
    await Deno.writeFile(join(dir, "expected.raw"), diskAt(d));
    await dirtybitOk(["restore", "--out", join(dir, "restored.raw"), ...p.streams!]);
    await assertSameImage(join(dir, "restored.raw"), join(dir, "expected.raw"));
    await Deno.remove(join(dir, "restored.raw"));
    await Deno.remove(join(dir, "restored.raw.dbit.json"));
    await Deno.remove(join(dir, "expected.raw"));
  }
}

async function streamsIn(dir: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
}

const dayNames = (days: number[]) => days.map((d) => `day${String(d).padStart(2, "0")}.dbit`);
const range = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);

Deno.test("prune: 40 streams, a policy keeps exactly the expected set and every kept point restores", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "dirtybit-test-" });
  const plain = join(root, "plain");
  const merging = join(root, "merging");
  try {
    await Deno.mkdir(plain);
    for (let d = 0; d < 40; d++) await writeDay(plain, d);
    await Deno.mkdir(merging);
    for (const name of await streamsIn(plain)) {
      await Deno.copyFile(join(plain, name), join(merging, name));
    }
    // Kept points: last 3 (days 37-39), daily 5 (35-39), weekly 5 (the Sundays 18 Oct = day 17,
    // 25 Oct = 24, 1 Nov = 31, 8 Nov = 38, and Monday 9 Nov = 39), monthly 2 (31 Oct = 30, 39).
    const policy = ["--keep-last", "3", "--keep-daily", "5", "--keep-weekly", "5"];
    policy.push("--keep-monthly", "2");
    const keptPoints = [17, 24, 30, 31, 35, 36, 37, 38, 39];

    await t.step("--dry-run changes nothing and says why", async () => {
      const out = await dirtybitOk(["prune", plain, ...policy, "--dry-run"]);
      assert.equal((await streamsIn(plain)).length, 40);
      assert.match(out, /keep +\S+day17\.dbit {2}point day17 kept \(weekly 2026-W42\)/);
      assert.match(out, /keep +\S+day12\.dbit {2}needed to restore kept point day17/);
      assert.match(out, /would remove +\S+day05\.dbit {2}point day5 is not kept/);
      for (const d of keptPoints) assert.match(out, new RegExp(`point day${d} kept \\(`));
    });

    await t.step("prune keeps the points and the streams they need", async () => {
      await dirtybitOk(["prune", plain, ...policy]);
      const kept = [...range(10, 17), ...range(20, 24), ...range(30, 39)];
      assert.deepEqual(await streamsIn(plain), dayNames(kept));
      await assertPointsRestore(plain, kept);
    });

    await t.step(
      "--merge turns the oldest kept points into fulls so older streams go",
      async () => {
        await dirtybitOk(["prune", merging, ...policy, "--merge"]);
        assert.deepEqual(await streamsIn(merging), [
          "day17.merged.dbit",
          "day24.merged.dbit",
          ...dayNames(range(30, 39)),
        ]);
        await assertPointsRestore(merging, [17, 24, ...range(30, 39)]);
        // A second run has nothing left to do.
        const again = await dirtybitOk(["prune", merging, ...policy, "--merge"]);
        assert.doesNotMatch(again, /remove|merge /);
      },
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
