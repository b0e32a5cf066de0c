import assert from "node:assert/strict";
import { xxh64 } from "@node-rs/xxhash";
import { HashDb } from "./hashdb.ts";
import { BlockClassifier, type ClassifiedExtent, fullBackupPlan, isAllZero } from "./layers.ts";

const B = 65536;

async function withDb(diskSize: number, fn: (db: HashDb) => void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-layers-" });
  const db = HashDb.open(`${dir}/db`, { blockSize: B, diskSize });
  try {
    fn(db);
  } finally {
    db.close();
    await Deno.remove(dir, { recursive: true });
  }
}

function filled(blocks: number[], tail = 0): Uint8Array {
  const out = new Uint8Array(blocks.length * B + tail);
  blocks.forEach((v, i) => out.fill(v, i * B, (i + 1) * B));
  return out;
}

function shape(runs: ClassifiedExtent[]) {
  return runs.map((r) => [r.kind, r.offset / B, r.length / B]);
}

Deno.test("isAllZero on aligned, unaligned and short views", () => {
  const buf = new Uint8Array(B + 16);
  assert.ok(isAllZero(buf));
  assert.ok(isAllZero(buf.subarray(3, 3 + 1000)));
  buf[B + 15] = 1;
  assert.ok(!isAllZero(buf));
  assert.ok(isAllZero(buf.subarray(0, B + 15)));
  buf[5] = 1;
  assert.ok(!isAllZero(buf.subarray(1, 100)));
  assert.ok(!isAllZero(buf.subarray(5, 6)));
});

Deno.test("full: zero blocks become zero extents, data merges, hashes staged for every block", () =>
  withDb(8 * B, (db) => {
    const c = new BlockClassifier(db, { compareWithParent: false });
    const chunk = filled([1, 1, 0, 2, 0, 0]);
    const runs = c.classify(0, chunk);
    assert.deepEqual(shape(runs), [["data", 0, 2], ["zero", 2, 1], ["data", 3, 1], ["zero", 4, 2]]);
    const first = runs[0];
    assert.ok(first.kind === "data" && first.data.buffer === chunk.buffer); // a view, no copy
    // Each data run carries its blocks' hashes, as staged in the DB.
    assert.deepEqual([...first.blockHashes], [
      xxh64(chunk.subarray(0, B)),
      xxh64(chunk.subarray(B, 2 * B)),
    ]);
    const third = runs[2];
    assert.ok(third.kind === "data");
    assert.deepEqual([...third.blockHashes], [xxh64(chunk.subarray(3 * B, 4 * B))]);
    assert.deepEqual(c.stats, {
      dirtyBytes: 6 * B,
      unchangedBytes: 0,
      zeroBytes: 3 * B,
      dataBytes: 3 * B,
    });
    const plan = fullBackupPlan(
      [{ offset: 0, length: 6 * B - 5, kind: "data" }, {
        offset: 6 * B - 5,
        length: 2 * B + 5,
        kind: "zero",
      }],
      B,
      8 * B,
    );
    assert.deepEqual(plan, {
      read: [{ offset: 0, length: 6 * B }],
      unread: [{ offset: 6 * B, length: 2 * B }],
    });
    c.stageUnread(plan.unread[0]);
    db.commit("full");
    const zero = xxh64(new Uint8Array(B));
    assert.equal(db.get(0), xxh64(chunk.subarray(0, B)));
    assert.deepEqual([2, 4, 5, 6, 7].map((i) => db.get(i)), [zero, zero, zero, zero, zero]);
  }));

Deno.test("incremental: an identical rewrite is dropped by L2, a zeroed block is a zero extent", () =>
  withDb(6 * B, (db) => {
    const full = new BlockClassifier(db, { compareWithParent: false });
    full.classify(0, filled([1, 2, 3, 4, 5, 6]));
    db.commit("full");
    // The bitmap says blocks 1..4 are dirty: 1 rewritten with equal data, 2 zeroed,
    // 3 changed, 4 rewritten equal.
    const inc = new BlockClassifier(db, { compareWithParent: db.id === "full" });
    const runs = inc.classify(B, filled([2, 0, 9, 5]));
    assert.deepEqual(shape(runs), [["zero", 2, 1], ["data", 3, 1]]);
    assert.deepEqual(inc.stats, {
      dirtyBytes: 4 * B,
      unchangedBytes: 2 * B,
      zeroBytes: B,
      dataBytes: B,
    });
    assert.equal(db.get(3), xxh64(filled([4]))); // still the parent's until commit
    db.commit("inc1");
    assert.equal(db.get(3), xxh64(filled([9])));
    // Next incremental: block 2 zero again -> unchanged now.
    const inc2 = new BlockClassifier(db, { compareWithParent: true });
    assert.deepEqual(shape(inc2.classify(2 * B, filled([0]))), []);
    assert.equal(inc2.stats.unchangedBytes, B);
  }));

Deno.test("without L2 (DB of another backup) nothing is dropped as unchanged", () =>
  withDb(2 * B, (db) => {
    new BlockClassifier(db, { compareWithParent: false }).classify(0, filled([7, 7]));
    db.commit("other");
    const c = new BlockClassifier(db, { compareWithParent: false });
    assert.deepEqual(shape(c.classify(0, filled([7, 7]))), [["data", 0, 2]]);
    assert.equal(c.stats.unchangedBytes, 0);
  }));

Deno.test("odd disk size: the partial last block is hashed, zero-checked and staged on its own", () =>
  withDb(3 * B + 1000, (db) => {
    const c = new BlockClassifier(db, { compareWithParent: false });
    const runs = c.classify(2 * B, filled([3], 1000));
    assert.deepEqual(runs.map((r) => [r.kind, r.offset, r.length]), [["data", 2 * B, B], [
      "zero",
      3 * B,
      1000,
    ]]);
    assert.throws(() => c.classify(B + 5, new Uint8Array(B)), RangeError);
    assert.throws(() => c.classify(0, new Uint8Array(B + 1)), RangeError);
    c.stageUnread({ offset: 0, length: 2 * B });
    db.commit("f");
    assert.equal(db.get(3), xxh64(new Uint8Array(1000)));
    const plan = fullBackupPlan(
      [{ offset: 3 * B + 10, length: 990, kind: "data" }],
      B,
      3 * B + 1000,
    );
    assert.deepEqual(plan.read, [{ offset: 3 * B, length: 1000 }]);
    assert.deepEqual(plan.unread, [{ offset: 0, length: 3 * B }]);
    const c2 = new BlockClassifier(db, { compareWithParent: true });
    c2.stageUnread({ offset: 2 * B, length: B + 1000 });
    const tail = new Uint8Array(1000);
    assert.deepEqual(c2.classify(3 * B, tail), []); // equal to the committed zero tail
    db.commit("g");
    assert.equal(db.get(3), xxh64(new Uint8Array(1000)));
    assert.equal(db.get(2), xxh64(new Uint8Array(B)));
  }));
