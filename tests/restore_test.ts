/**
 * Integration tests of restore, verify and inspect on streams made by real
 * backups of a qemu-storage-daemon disk: chain order, one stream per run,
 * differentials, and truncated or corrupted streams that must be refused
 * without ever leaving a target that looks complete.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Qsd } from "./fixtures/qsd.ts";
import { assertOneLineError, assertSameImage, dirtybit, dirtybitOk } from "./fixtures/cli.ts";
import type { DiskBackupResult } from "../lib/backup/plan.ts";

const KiB = 1 << 10;
const MiB = 1 << 20;

/** Bytes `[0, length)` of `src` written to `dst`. */
async function truncatedCopy(src: string, dst: string, length: number): Promise<void> {
  await Deno.writeFile(dst, (await Deno.readFile(src)).subarray(0, length));
}

/** `src` with byte `at` inverted, written to `dst`. */
async function corruptedCopy(src: string, dst: string, at: number): Promise<void> {
  const bytes = await Deno.readFile(src);
  bytes[at] ^= 0xff;
  await Deno.writeFile(dst, bytes);
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

Deno.test("restore: chain order, one stream per run, differential, damaged streams", async (t) => {
  const size = 32 * MiB;
  const qsd = await Qsd.start({
    disks: [{ size, writes: [{ pattern: 0x71, offset: 0, length: 6 * MiB }] }],
  });
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-test-" });
  const at = (name: string) => join(dir, name);
  const backup = async (stream: string, level = "auto") => {
    const r = await dirtybit([
      "backup",
      ...["--qmp", qsd.qmpSocket, "--nbd-socket", qsd.nbdSocket, "--node", "disk0"],
      ...["--state-dir", at("state"), "--out", at(stream), "--level", level, "--json"],
    ]);
    assert.equal(r.code, 0, r.stderr);
    const [disk] = JSON.parse(r.stdout) as DiskBackupResult[];
    // Only the first full has something to warn about (no previous backup).
    if (disk.parentId) assert.doesNotMatch(r.stderr, /warning/, `${level} backup warned`);
    return disk;
  };
  try {
    // full (s0), incremental (s1), incremental (s2), differential (s3); pN = the disk at sN.
    const full = await backup("s0.dbit");
    await qsd.snapshotImage(0, at("p0.raw"));
    await qsd.guestWrite(0, 0x72, MiB, 2 * MiB);
    await backup("s1.dbit");
    await qsd.snapshotImage(0, at("p1.raw"));
    await qsd.guestWrite(0, 0x73, 16 * MiB, 512 * KiB);
    await qsd.guestWriteZeroes(0, 4 * MiB, MiB);
    await backup("s2.dbit");
    await qsd.snapshotImage(0, at("p2.raw"));
    await qsd.guestWrite(0, 0x74, 24 * MiB, 256 * KiB);
    const diff = await backup("s3.dbit", "differential");
    await qsd.snapshotImage(0, at("p3.raw"));
    assert.equal(diff.level, "differential");
    assert.equal(diff.parentId, full.backupId);
    assert.equal(
      diff.stats.dirtyBytes,
      2 * MiB + 512 * KiB + MiB + 256 * KiB,
      "all since the full",
    );
    const s = [0, 1, 2, 3].map((i) => at(`s${i}.dbit`));

    await t.step("verify accepts the chain in order, refuses a gap", async () => {
      await dirtybitOk(["verify", s[0], s[1], s[2]]);
      await dirtybitOk(["verify", s[0], s[3]]);
      const gap = await dirtybit(["verify", s[0], s[2]]);
      assert.equal(gap.code, 4, "a gap is a chain error, as restore says");
      assert.match(gap.stdout, /BAD .*s2\.dbit: .*based on/);
    });

    await t.step("a differential restores on its full", async () => {
      await dirtybitOk(["restore", "--out", at("d.qcow2"), s[0], s[3]]);
      await assertSameImage(at("d.qcow2"), at("p3.raw"));
    });

    await t.step("wrong order and gaps are refused before anything is written", async () => {
      assertOneLineError(
        await dirtybit(["restore", "--out", at("gap.raw"), s[0], s[2]]),
        4,
        "give the streams in chain order without gaps",
      );
      assertOneLineError(
        await dirtybit(["restore", "--out", at("gap.raw"), s[1], s[0]]),
        4,
        "cannot follow",
      );
      assertOneLineError(
        await dirtybit(["restore", "--out", at("gap.raw"), s[1]]),
        4,
        "restore the full first",
      );
      assertOneLineError(
        await dirtybit(["restore", "--out", at("gap.raw"), s[0], s[1], s[3]]),
        4,
        "applies only directly on its full",
      );
      assert.ok(!await exists(at("gap.raw")), "a refused chain leaves no target");
      // One stream per run: the sidecar holds the last one applied.
      await dirtybitOk(["restore", "--out", at("gap.raw"), s[0]]);
      assertOneLineError(await dirtybit(["restore", "--out", at("gap.raw"), s[2]]), 4, "based on");
      await dirtybitOk(["restore", "--out", at("gap.raw"), s[1]]);
      assertOneLineError(await dirtybit(["restore", "--out", at("gap.raw"), s[1]]), 4, "based on");
      await dirtybitOk(["restore", "--out", at("gap.raw"), s[2]]);
      await assertSameImage(at("gap.raw"), at("p2.raw"));
    });

    await t.step("truncated streams are refused by verify, inspect and restore", async () => {
      const length = (await Deno.stat(s[0])).size;
      const cuts = [0, 7, 16, 100, Math.floor(length / 2), length - 64, length - 1];
      const copies = [];
      for (const cut of cuts) {
        copies.push(at(`cut-${cut}.dbit`));
        await truncatedCopy(s[0], copies.at(-1)!, cut);
      }
      const verify = await dirtybit(["verify", "--json", ...copies]);
      assert.equal(verify.code, 3);
      const results = JSON.parse(verify.stdout) as { ok: boolean; error: string }[];
      assert.equal(results.length, cuts.length);
      for (const r of results) {
        assert.ok(!r.ok);
        assert.match(r.error, /truncated|incomplete|not a dirtybit/);
      }
      const half = at(`cut-${Math.floor(length / 2)}.dbit`);
      assertOneLineError(await dirtybit(["inspect", half]), 3, "truncated");
      for (const out of [at("cut.raw"), at("cut.qcow2")]) {
        assertOneLineError(await dirtybit(["restore", "--out", out, half]), 3, "truncated");
        assert.ok(!await exists(out), `a failed full restore leaves no ${out}`);
        assert.ok(!await exists(`${out}.partial`), "nor its partial file");
        assert.ok(!await exists(`${out}.dbit.json`), "nor a sidecar");
      }
    });

    await t.step("corrupted streams are refused wherever the damage is", async () => {
      const length = (await Deno.stat(s[1])).size;
      const copies = [];
      for (let i = 0; i < 24; i++) {
        const where = Math.floor((length - 1) * i / 23);
        copies.push(at(`bad-${where}.dbit`));
        await corruptedCopy(s[1], copies.at(-1)!, where);
      }
      const withGarbage = at("garbage.dbit");
      await Deno.writeFile(withGarbage, await Deno.readFile(s[1]));
      await Deno.writeFile(withGarbage, new Uint8Array([1, 2, 3]), { append: true });
      copies.push(withGarbage);
      const verify = await dirtybit(["verify", "--json", ...copies]);
      assert.equal(verify.code, 3, verify.stderr);
      for (const r of JSON.parse(verify.stdout) as { ok: boolean; stream: string }[]) {
        assert.ok(!r.ok, `${r.stream} passed verify`);
      }
      assertOneLineError(await dirtybit(["inspect", copies[12], "--json"]), 3);
      // Damage found only at the end (the trailer): every record was applied already.
      const badTrailer = copies.at(-2)!;
      await dirtybitOk(["restore", "--out", at("bad.raw"), s[0]]);
      assertOneLineError(await dirtybit(["restore", "--out", at("bad.raw"), badTrailer]), 3);
      assertOneLineError(
        await dirtybit(["restore", "--out", at("bad.raw"), s[1]]),
        4,
        "incomplete",
      );
    });

    await t.step("an incremental cut short leaves the target marked incomplete", async () => {
      const cut = at("s1-cut.dbit");
      await truncatedCopy(s[1], cut, (await Deno.stat(s[1])).size - 10);
      for (const out of [at("inc.raw"), at("inc.qcow2")]) {
        assertOneLineError(await dirtybit(["restore", "--out", out, s[0], cut]), 3, "truncated");
        const sidecar = JSON.parse(await Deno.readTextFile(`${out}.dbit.json`));
        assert.ok(sidecar.applying, "the sidecar marks the target incomplete");
        assertOneLineError(
          await dirtybit(["restore", "--out", out, s[1]]),
          4,
          "left incomplete",
        );
        // Starting again from the full is what the message asks for, and works.
        await dirtybitOk(["restore", "--out", out, s[0], s[1]]);
        await assertSameImage(out, at("p1.raw"));
      }
    });
  } finally {
    await qsd.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
