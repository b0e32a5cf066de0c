import { deepStrictEqual as eq } from "node:assert/strict";
import { RunSet } from "./run_set.ts";

Deno.test("RunSet merges runs and answers has/rank/members", () => {
  const s = new RunSet([{ start: 10, end: 12 }, { start: 2, end: 4 }, { start: 3, end: 6 }]);
  eq(s.runs, [{ start: 2, end: 6 }, { start: 10, end: 12 }]);
  eq(s.count, 6);
  eq([s.has(1), s.has(2), s.has(6), s.has(11)], [false, true, false, true]);
  eq([s.rank(0), s.rank(4), s.rank(8), s.rank(11), s.rank(99)], [0, 2, 4, 5, 6]);
  eq([...s.membersIn(4, 11)], [4, 5, 10]);
  eq(s.group(4).runs, [{ start: 0, end: 3 }]);
});

Deno.test("RunSet.fromMap keeps only blocks touching data", () => {
  const s = RunSet.fromMap([
    { offset: 0, length: 100, kind: "zero" },
    { offset: 100, length: 30, kind: "data" },
    { offset: 130, length: 1000, kind: "zero" },
    { offset: 1130, length: 1, kind: "data" },
  ], 64);
  eq(s.runs, [{ start: 1, end: 3 }, { start: 17, end: 18 }]);
});
