import assert from "node:assert/strict";
import { baseFull, differentialProblem } from "./bacula_fulls.ts";

const fulls = [
  { jobId: 1, time: 1000, disks: { d0: "a", d1: "b" } },
  // A later Full job that Bacula failed after the backend finished it.
  { jobId: 5, time: 5000, disks: { d0: "e", d1: "f" } },
];

Deno.test("baseFull: the first record at or after the Differential's Since", () => {
  assert.equal(baseFull(fulls, 998)?.jobId, 1);
  assert.equal(baseFull(fulls, 1000)?.jobId, 1);
  assert.equal(baseFull(fulls, 4990)?.jobId, 5);
  assert.equal(baseFull(fulls, 6000), null);
  assert.equal(baseFull(fulls, undefined), null);
  assert.equal(baseFull([], 1), null);
});

Deno.test("differentialProblem: every disk's last full must be the base job's", () => {
  const base = fulls[0];
  const ok = [{ diskName: "d0", lastFullId: "a" }, { diskName: "d1", lastFullId: "b" }];
  assert.equal(differentialProblem(base, ok), null);
  assert.match(
    differentialProblem(base, [{ diskName: "d0", lastFullId: "x" }])!,
    /last full of d0 is not the one of Full job 1/,
  );
  assert.match(
    differentialProblem(base, [{ diskName: "d2", lastFullId: "a" }])!,
    /d2 was not in Full job 1/,
  );
  assert.match(differentialProblem(null, ok)!, /no Bacula Full job/);
});
