import assert from "node:assert/strict";
import { type BaculaJob, chainProblem } from "./bacula_jobs.ts";

const full1: BaculaJob = { jobId: 1, level: "F", time: 1000_300, disks: { d0: "a", d1: "b" } };
const incr2: BaculaJob = { jobId: 2, level: "I", time: 2000_300, disks: { d0: "c", d1: "d" } };
/** A Full job that Bacula cancelled after the backend finished it. */
const full5: BaculaJob = { jobId: 5, level: "F", time: 5000_300, disks: { d0: "e", d1: "f" } };

const disk = (diskName: string, lastBackupId: string, lastFullId: string) => ({
  diskName,
  lastBackupId,
  lastFullId,
});

Deno.test("chainProblem: the base is the only record since Since, and each disk is at it", () => {
  const both = [disk("d0", "c", "a"), disk("d1", "d", "b")];
  assert.equal(chainProblem([full1, incr2], "D", 1000, both), null);
  assert.equal(chainProblem([full1, incr2], "I", 2000, both), null);
  assert.match(chainProblem([full1, incr2], "I", 1000, both)!, /jobs 1, 2 all ran since/);
  assert.match(chainProblem([full1, incr2], "I", 3000, both)!, /no job this backend finished/);
  assert.match(chainProblem([full1], "I", undefined, both)!, /no Since/);
  // Disks without a chain are the engine's to make full.
  assert.equal(
    chainProblem([], "I", undefined, [{ diskName: "d0", lastBackupId: null, lastFullId: null }]),
    null,
  );
});

Deno.test("chainProblem: a later job Bacula did not keep, a fallback full, a new disk", () => {
  // Full 5 committed, then Bacula cancelled it: its Incremental is on job 2.
  assert.match(
    chainProblem([full1, incr2, full5], "I", 2000, [disk("d0", "e", "e")])!,
    /jobs 2, 5 all ran since/,
  );
  assert.match(
    chainProblem([full1, full5], "D", 1000, [disk("d0", "e", "e")])!,
    /jobs 1, 5 all ran since Bacula's base Full job/,
  );
  // A fallback full inside Incremental 2.
  assert.match(
    chainProblem([full1, incr2], "D", 1000, [disk("d0", "c", "c")])!,
    /last full of d0 is not the one of Full job 1/,
  );
  assert.match(
    chainProblem([full1], "I", 1000, [disk("d2", "a", "a")])!,
    /d2 was not in job 1/,
  );
});
