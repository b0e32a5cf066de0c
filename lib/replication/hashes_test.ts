import assert from "node:assert/strict";
import { cycleKey, l2Decision } from "./hashes.ts";

Deno.test("L2 compares only against the replica's current cycle", () => {
  assert.deepStrictEqual(l2Decision(cycleKey("s", 4), "s", 4, 4, false), {
    compare: true,
    commit: true,
  });
  // The confirmation of cycle 5 was lost before the DB commit: the DB is of
  // cycle 4, the checkpoint too; the replica is at 5.
  assert.deepStrictEqual(l2Decision(cycleKey("s", 4), "s", 5, 4, false), {
    compare: false,
    commit: true,
  });
  // The DB commit happened, the checkpoint commit did not.
  assert.deepStrictEqual(l2Decision(cycleKey("s", 5), "s", 5, 4, false), {
    compare: true,
    commit: true,
  });
});

Deno.test("L2 leaves a DB of another seed or an unknown cycle alone, unless the view is full", () => {
  assert.deepStrictEqual(l2Decision(cycleKey("t", 4), "s", 4, 4, false), {
    compare: false,
    commit: false,
  });
  assert.deepStrictEqual(l2Decision(null, "s", 7, 5, false), { compare: false, commit: false });
  assert.deepStrictEqual(l2Decision(null, "s", 7, 5, true), { compare: false, commit: true });
});
