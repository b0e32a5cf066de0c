import assert from "node:assert/strict";
import { HashDb } from "./hashdb.ts";
import { withDir } from "../../tests/helpers.ts";

const geometry = { blockSize: 65536, diskSize: 100 * 65536 + 123 }; // 101 blocks, last partial

Deno.test("a new DB has no id; staged hashes are invisible until commit", () =>
  withDir((dir) => {
    const db = HashDb.open(`${dir}/db`, geometry);
    try {
      assert.equal(db.id, null);
      assert.equal(db.blockCount, 101);
      assert.equal(db.resetReason, null);
      db.stage(3, 33n);
      db.stageRange(10, 5, 7n);
      db.stage(100, 0xffff_ffff_ffff_fffen);
      assert.equal(db.get(3), 0n);
      db.commit("b1");
      assert.equal(db.id, "b1");
      assert.equal(db.get(3), 33n);
      assert.deepEqual([9, 10, 14, 15].map((i) => db.get(i)), [0n, 7n, 7n, 0n]);
      assert.equal(db.get(100), 0xffff_ffff_ffff_fffen);
      assert.throws(() => db.get(101), RangeError);
      assert.throws(() => db.stage(101, 1n), RangeError);
    } finally {
      db.close();
    }
    const again = HashDb.open(`${dir}/db`, geometry);
    try {
      assert.equal(again.id, "b1");
      assert.equal(again.get(3), 33n);
      assert.equal(again.get(12), 7n);
    } finally {
      again.close();
    }
  }));

Deno.test("discard and an uncommitted crash keep the committed state", () =>
  withDir((dir) => {
    const path = `${dir}/db`;
    const db = HashDb.open(path, geometry);
    db.stage(1, 11n);
    db.commit("b1");
    db.stage(1, 22n);
    db.discard();
    assert.equal(db.get(1), 11n);
    // Stage a lot (journal flushed to disk) and "crash": never commit, never close.
    for (let i = 0; i < 101; i++) db.stage(i, BigInt(1000 + i));
    for (let i = 0; i < 5000; i++) db.stage(i % 101, BigInt(i));
    assert.ok(Deno.statSync(`${path}.journal`).size > 24);
    const reopened = HashDb.open(path, geometry);
    try {
      assert.equal(reopened.id, "b1");
      assert.equal(reopened.get(1), 11n);
      assert.equal(reopened.get(2), 0n);
      assert.throws(() => Deno.statSync(`${path}.journal`));
    } finally {
      reopened.close();
      db.close();
    }
  }));

Deno.test("another geometry or a corrupt header starts afresh with a reason", () =>
  withDir((dir) => {
    const path = `${dir}/db`;
    const db = HashDb.open(path, geometry);
    db.stage(0, 5n);
    db.commit("b1");
    db.close();
    const bigger = HashDb.open(path, { ...geometry, diskSize: geometry.diskSize + 65536 });
    assert.equal(bigger.id, null);
    assert.match(bigger.resetReason!, /starts afresh/);
    bigger.stage(0, 9n);
    bigger.commit("b2");
    bigger.close();
    const bytes = Deno.readFileSync(path);
    bytes[40] ^= 1; // inside the id / checksummed header
    Deno.writeFileSync(path, bytes);
    const corrupt = HashDb.open(path, { ...geometry, diskSize: geometry.diskSize + 65536 });
    try {
      assert.equal(corrupt.id, null);
      assert.match(corrupt.resetReason!, /corrupt/);
      assert.equal(corrupt.get(0), 0n);
    } finally {
      corrupt.close();
    }
  }));

// A child process stages and commits, and dies (Deno.exit, no cleanup) at a chosen point.
const crashScript = `
import { HashDb } from ${JSON.stringify(new URL("./hashdb.ts", import.meta.url).href)};
import { MappedFile } from ${JSON.stringify(new URL("../../ffi/libc.ts", import.meta.url).href)};
const [path, crashAt] = Deno.args;
const geometry = ${JSON.stringify(geometry)};
let syncs = 0;
const sync = MappedFile.prototype.sync;
MappedFile.prototype.sync = function (...args) {
  syncs++;
  if (crashAt === "before-apply" && syncs === 1) Deno.exit(9);
  if (crashAt === "mid-apply" && syncs === 2) Deno.exit(9);
  return sync.apply(this, args);
};
const fsync = Deno.FsFile.prototype.syncSync;
Deno.FsFile.prototype.syncSync = function () {
  if (crashAt === "journal-sync") Deno.exit(9);
  return fsync.call(this);
};
const remove = Deno.removeSync;
Deno.removeSync = (p, o) => {
  if (crashAt === "before-journal-removed" && String(p).endsWith(".journal")) Deno.exit(9);
  return remove(p, o);
};
const db = HashDb.open(path, geometry);
for (let i = 0; i < 101; i++) db.stage(i, BigInt(2000 + i));
if (crashAt === "before-commit") Deno.exit(9);
db.commit("b2");
Deno.exit(0);
`;

const config = new URL("../../deno.json", import.meta.url).pathname;

Deno.test("a crash at any point of a commit leaves the old or the new state", async () => {
  await withDir(async (dir) => {
    const script = `${dir}/crash.ts`;
    await Deno.writeTextFile(script, crashScript);
    // [crash point, id expected after reopening, "torn": cut the journal's last bytes first]
    const cases: [string, string, string?][] = [
      ["before-commit", "b1"],
      ["before-apply", "b2"],
      ["mid-apply", "b2"],
      ["before-journal-removed", "b2"],
      ["none", "b2"],
      ["journal-sync", "b2"],
      ["journal-sync", "b1", "torn"],
    ];
    for (const [crashAt, expectId, torn] of cases) {
      const path = `${dir}/db-${crashAt}${torn ?? ""}`;
      const db = HashDb.open(path, geometry);
      for (let i = 0; i < 101; i++) db.stage(i, BigInt(1000 + i));
      db.commit("b1");
      db.close();
      const child = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--no-check", `--config=${config}`, script, path, crashAt],
        stdout: "null",
        stderr: "piped",
      }).output();
      assert.equal(child.code, crashAt === "none" ? 0 : 9, new TextDecoder().decode(child.stderr));
      if (torn) {
        const journal = await Deno.readFile(`${path}.journal`);
        await Deno.writeFile(`${path}.journal`, journal.subarray(0, journal.length - 3));
      }
      const after = HashDb.open(path, geometry);
      try {
        assert.equal(after.id, expectId, `${crashAt}: ${after.id} ${after.resetReason}`);
        const base = expectId === "b1" ? 1000n : 2000n;
        for (let i = 0; i < 101; i++) {
          assert.equal(after.get(i), base + BigInt(i), `${crashAt} ${i}`);
        }
      } finally {
        after.close();
      }
    }
  });
});

Deno.test("a 4 TiB disk's DB is indexed directly: sparse on disk, nothing scanned or filled", () =>
  withDir((dir) => {
    // Speed is the benchmark's business (tests/bench/engine.ts); here the
    // structure that makes lookups O(1): one slot per block, addressed by index,
    // so opening and using a huge DB touches only the pages it needs.
    const g = { blockSize: 65536, diskSize: 2 ** 42 }; // 2^26 blocks
    const db = HashDb.open(`${dir}/large`, g);
    try {
      assert.equal(db.blockCount, 2 ** 26);
      const last = db.blockCount - 1;
      db.stage(last, 42n);
      db.stage(12345, 7n);
      db.commit("b1");
      assert.equal(db.get(last), 42n);
      assert.equal(db.get(12345), 7n);
      assert.equal(db.get(last - 1), 0n);
    } finally {
      db.close();
    }
    const info = Deno.statSync(`${dir}/large`);
    assert.ok(info.size >= 2 ** 26 * 8, "one 8-byte slot per block");
    assert.ok(
      info.blocks! * 512 < 1 << 20,
      `allocated ${info.blocks! * 512} bytes: the file was filled`,
    );
  }));
