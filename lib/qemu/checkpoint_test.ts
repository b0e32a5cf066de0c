import assert from "node:assert/strict";
import { ChainError, describeError, SourceError, UsageError } from "../core/errors.ts";
import type { BitmapInfo, BlockNodeInfo } from "./blocknodes.ts";
import {
  bitmapNames,
  bitmapOwner,
  bitmapProblem,
  type DiskCheckpoint,
  foreignBitmaps,
  isScopedBitmap,
  isScopedTempId,
  newTempPrefix,
  planDisk,
} from "./checkpoint.ts";

function bitmap(name: string, extra: Partial<BitmapInfo> = {}): BitmapInfo {
  return {
    name,
    granularity: 65536,
    count: 0,
    recording: true,
    persistent: true,
    busy: false,
    ...extra,
  };
}

function node(...bitmaps: BitmapInfo[]): BlockNodeInfo {
  return { name: "disk0", filename: "/img/disk0.qcow2", driver: "qcow2", size: 64 << 20, bitmaps };
}

const cp1: DiskCheckpoint = {
  node: "disk0",
  incBitmap: "dirtybit-inc-c1",
  baseBitmap: "dirtybit-base-c1",
};
const names2 = bitmapNames("c2");

Deno.test("bitmapNames: scoped and unscoped names, bad ids and scopes refused", () => {
  assert.deepEqual(bitmapNames("c1"), {
    inc: "dirtybit-inc-c1",
    base: "dirtybit-base-c1",
    tmp: "dirtybit-tmp-c1",
  });
  assert.equal(bitmapNames("20250101T000000", "repl").inc, "dirtybit-repl-inc-20250101T000000");
  assert.throws(() => bitmapNames("a b"), UsageError);
  assert.throws(() => bitmapNames(""), UsageError);
  assert.throws(() => bitmapNames("c1", "inc"), UsageError);
  assert.throws(() => bitmapNames("c1", "Repl"), UsageError);
});

Deno.test("isScopedBitmap: scopes do not see each other's bitmaps", () => {
  assert.ok(isScopedBitmap("dirtybit-inc-c1"));
  assert.ok(!isScopedBitmap("dirtybit-repl-inc-c1"));
  assert.ok(isScopedBitmap("dirtybit-repl-tmp-c1", "repl"));
  assert.ok(!isScopedBitmap("dirtybit-inc-c1", "repl"));
  assert.ok(!isScopedBitmap("libvirt-c1"));
});

Deno.test("temporary ids: fresh per attempt, recognised only in their scope", () => {
  const a = newTempPrefix();
  assert.match(a, /^dirtybit-[0-9a-f]{8}-$/);
  assert.notEqual(a, newTempPrefix());
  assert.ok(isScopedTempId(`${a}o0`));
  assert.ok(!isScopedTempId(`${a}o0`, "repl"));
  const r = newTempPrefix("repl");
  assert.ok(isScopedTempId(`${r}j12`, "repl"));
  assert.ok(!isScopedTempId(`${r}j12`));
  assert.ok(`${newTempPrefix("abcdefgh")}f10`.length <= 31);
  assert.ok(!isScopedTempId("dirtybit-inc-c1"));
});

Deno.test("bitmapProblem: every unusable state has its reason", () => {
  const n = node(
    bitmap("ok"),
    bitmap("bad", { inconsistent: true, recording: false }),
    bitmap("off", { recording: false }),
    bitmap("mem", { persistent: false }),
  );
  assert.equal(bitmapProblem(n, "ok"), undefined);
  assert.match(
    bitmapProblem(node(bitmap("dirtybit-base-c1")), "dirtybit-inc-c1")!,
    /does not exist on node disk0: it was removed/,
  );
  assert.match(
    bitmapProblem(node(bitmap("libvirt-x")), "dirtybit-inc-c1")!,
    /does not exist on node disk0: no dirtybit bitmap is left, so QEMU was restarted/,
  );
  assert.equal(
    bitmapProblem(n, "bad"),
    "bitmap bad is inconsistent (QEMU was not shut down cleanly)",
  );
  assert.match(bitmapProblem(n, "off")!, /disabled/);
  assert.match(bitmapProblem(n, "mem")!, /not persistent/);
});

Deno.test("planDisk: full starts both bitmaps and drops the old ones only on commit", () => {
  const plan = planDisk(node(bitmap(cp1.incBitmap), bitmap(cp1.baseBitmap)), cp1, "full", names2);
  assert.equal(plan.level, "full");
  assert.equal(plan.reason, undefined);
  assert.equal(plan.source, undefined);
  assert.deepEqual(plan.added, ["dirtybit-inc-c2", "dirtybit-base-c2"]);
  assert.deepEqual(plan.removeNow, []);
  assert.deepEqual(plan.removeOnCommit.sort(), ["dirtybit-base-c1", "dirtybit-inc-c1"]);
  assert.deepEqual(plan.next, {
    node: "disk0",
    incBitmap: "dirtybit-inc-c2",
    baseBitmap: "dirtybit-base-c2",
  });
});

Deno.test("planDisk: incremental exports the inc bitmap and keeps the base", () => {
  const plan = planDisk(
    node(bitmap(cp1.incBitmap), bitmap(cp1.baseBitmap), bitmap("dirtybit-inc-crashed")),
    cp1,
    "incremental",
    names2,
  );
  assert.equal(plan.level, "incremental");
  assert.equal(plan.source?.name, "dirtybit-inc-c1");
  assert.deepEqual(plan.added, ["dirtybit-inc-c2"]);
  assert.deepEqual(plan.removeNow, ["dirtybit-inc-crashed"]);
  assert.deepEqual(plan.removeOnCommit, ["dirtybit-inc-c1"]);
  assert.deepEqual(plan.next, {
    node: "disk0",
    incBitmap: "dirtybit-inc-c2",
    baseBitmap: "dirtybit-base-c1",
  });
});

Deno.test("planDisk: differential exports the base bitmap and rotates the inc one", () => {
  const plan = planDisk(
    node(bitmap(cp1.incBitmap), bitmap(cp1.baseBitmap)),
    cp1,
    "differential",
    names2,
  );
  assert.equal(plan.level, "differential");
  assert.equal(plan.source?.name, "dirtybit-base-c1");
  assert.deepEqual(plan.removeOnCommit, ["dirtybit-inc-c1"]);
  assert.equal(plan.next.baseBitmap, "dirtybit-base-c1");
});

Deno.test("planDisk: unusable bitmaps give a full with the reason and are removed", () => {
  const inconsistent = planDisk(
    node(bitmap(cp1.incBitmap, { inconsistent: true, recording: false }), bitmap(cp1.baseBitmap)),
    cp1,
    "incremental",
    names2,
  );
  assert.equal(inconsistent.level, "full");
  assert.equal(
    inconsistent.reason,
    "bitmap dirtybit-inc-c1 is inconsistent (QEMU was not shut down cleanly)",
  );
  assert.deepEqual(inconsistent.removeNow, ["dirtybit-inc-c1"]);
  assert.deepEqual(inconsistent.removeOnCommit, ["dirtybit-base-c1"]);

  const noBase = planDisk(node(bitmap(cp1.incBitmap)), cp1, "differential", names2);
  assert.equal(noBase.level, "full");
  assert.match(noBase.reason!, /dirtybit-base-c1 does not exist/);

  const first = planDisk(node(), undefined, "incremental", names2);
  assert.equal(first.level, "full");
  assert.match(first.reason!, /no previous checkpoint/);

  const moved = planDisk(node(), { ...cp1, node: "disk1" }, "incremental", names2);
  assert.match(moved.reason!, /belongs to node disk1/);
});

Deno.test("planDisk: a busy bitmap means another job; a reused id is refused", () => {
  assert.throws(
    () => planDisk(node(bitmap("dirtybit-tmp-c9", { busy: true })), cp1, "incremental", names2),
    SourceError,
  );
  assert.throws(
    () => planDisk(node(bitmap(cp1.incBitmap)), cp1, "incremental", bitmapNames("c1")),
    UsageError,
  );
  const otherScope = planDisk(
    node(bitmap("dirtybit-repl-tmp-c9", { busy: true }), bitmap("dirtybit-repl-inc-c9")),
    undefined,
    "full",
    names2,
  );
  assert.deepEqual(otherScope.removeNow, []);
});

const A = "0123456789ab";
const B = "ba9876543210";
const cpA: DiskCheckpoint = {
  node: "disk0",
  incBitmap: `dirtybit-inc-c1@${A}`,
  baseBitmap: `dirtybit-base-c1@${A}`,
};

Deno.test("bitmapNames: an owner id is carried by every name and read back", () => {
  const names = bitmapNames("c2", undefined, A);
  assert.deepEqual(names, {
    inc: `dirtybit-inc-c2@${A}`,
    base: `dirtybit-base-c2@${A}`,
    tmp: `dirtybit-tmp-c2@${A}`,
    owner: A,
  });
  assert.equal(bitmapOwner(names.inc), A);
  assert.equal(bitmapOwner("dirtybit-inc-c1"), undefined);
  assert.ok(isScopedBitmap(names.base));
  assert.throws(() => bitmapNames("c2", undefined, "x@y"), UsageError);
});

Deno.test("planDisk: another owner's bitmaps are refused, naming the owner and take_over", () => {
  const theirs = node(bitmap(`dirtybit-inc-c7@${B}`), bitmap(`dirtybit-base-c7@${B}`));
  const mine = bitmapNames("c2", undefined, A);
  assert.throws(
    () => planDisk(theirs, undefined, "full", mine),
    (err: Error) =>
      err instanceof ChainError &&
      /^node disk0 belongs to the chain of owner ba9876543210 \(another state directory\): pass take_over /
        .test(err.message) &&
      // The CLI names the parameter as its flag.
      describeError(err, (p) => `--${p.replaceAll("_", "-")}`).includes(": pass --take-over "),
  );
  // Ours was there before: the message says it was taken over.
  assert.throws(
    () => planDisk(theirs, cpA, "incremental", mine),
    /the checkpoint of node disk0 was taken over by the chain of owner ba9876543210/,
  );
  // Another scope (replication) is never another owner.
  const repl = planDisk(node(bitmap(`dirtybit-r1234567-inc-c7@${B}`)), undefined, "full", mine);
  assert.deepEqual(repl.removeNow, []);
});

Deno.test("planDisk: a take-over removes the other owner's bitmaps and takes a full", () => {
  const both = node(
    bitmap(`dirtybit-inc-c7@${B}`),
    bitmap(`dirtybit-base-c7@${B}`),
    bitmap(cpA.incBitmap, { persistent: true }),
  );
  const plan = planDisk(both, cpA, "incremental", bitmapNames("c2", undefined, A), {
    takeOver: true,
  });
  assert.equal(plan.level, "full");
  assert.match(plan.reason!, /taking node disk0 over from the chain of owner ba9876543210/);
  assert.deepEqual(plan.removeNow.sort(), [`dirtybit-base-c7@${B}`, `dirtybit-inc-c7@${B}`]);
  assert.deepEqual(plan.removeOnCommit, [cpA.incBitmap]);
  assert.deepEqual(plan.added, [`dirtybit-inc-c2@${A}`, `dirtybit-base-c2@${A}`]);
});

Deno.test("planDisk: bitmaps of our checkpoint made before owner ids stay ours", () => {
  const plan = planDisk(
    node(bitmap(cp1.incBitmap), bitmap(cp1.baseBitmap)),
    cp1,
    "incremental",
    bitmapNames("c2", undefined, A),
  );
  assert.equal(plan.level, "incremental");
  assert.equal(plan.source?.name, cp1.incBitmap);
  assert.equal(plan.next.incBitmap, `dirtybit-inc-c2@${A}`);
  assert.equal(plan.next.baseBitmap, cp1.baseBitmap);
});

Deno.test("planDisk: a full for a reason found elsewhere keeps the old checkpoint until commit", () => {
  const plan = planDisk(
    node(bitmap(cp1.incBitmap), bitmap(cp1.baseBitmap)),
    cp1,
    "incremental",
    bitmapNames("c2", undefined, A),
    { fullBecause: "the disk was resized" },
  );
  assert.equal(plan.level, "full");
  assert.equal(plan.reason, "the disk was resized");
  assert.deepEqual(plan.removeNow, []);
  assert.deepEqual(plan.removeOnCommit.sort(), [cp1.baseBitmap, cp1.incBitmap]);
});

Deno.test("foreignBitmaps: unowned bitmaps the state names are adopted; the refusal says how to take over", () => {
  const scope = "r1234567";
  const old = bitmapNames("c1", scope);
  const disk = node(bitmap(old.inc), bitmap(old.base), bitmap(`dirtybit-${scope}-inc-c5@${A}`));
  // Named by the state (not the view's checkpoint): ours, removed as stale by the plan.
  const mine = bitmapNames("c2", scope, A);
  assert.deepEqual(foreignBitmaps(disk, undefined, A, { scope, adopt: [old.inc, old.base] }), []);
  const plan = planDisk(disk, undefined, "incremental", mine, {
    scope,
    adopt: [old.inc, old.base],
  });
  assert.equal(plan.reason, "no previous checkpoint for node disk0");
  assert.deepEqual(plan.removeNow.sort(), [old.base, old.inc, `dirtybit-${scope}-inc-c5@${A}`]);
  // Named by no state of ours: another chain's, of unknown owner.
  assert.throws(
    () =>
      foreignBitmaps(disk, undefined, B, { scope, takeOverHint: () => "pass --take-over, here" }),
    (err: Error) =>
      err instanceof ChainError &&
      err.message === "node disk0 belongs to the chain of owner unknown (bitmaps made before " +
          `owner ids), ${A} (another state directory): pass --take-over, here`,
  );
  assert.equal(foreignBitmaps(disk, undefined, B, { scope, takeOver: true }).length, 3);
});
