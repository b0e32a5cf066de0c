import assert from "node:assert/strict";
import { blockPlan, seedWindows } from "./plan.ts";

Deno.test("seed windows cover the rest of the disk", () => {
  assert.deepStrictEqual([...seedWindows(250, 40, 100)], [
    { offset: 40, length: 100 },
    { offset: 140, length: 100 },
    { offset: 240, length: 10 },
  ]);
  assert.deepStrictEqual([...seedWindows(250, 250, 100)], []);
});

Deno.test("block plan: whole zero blocks unread, every other touched block read whole", () => {
  const plan = blockPlan(
    [
      { offset: 10, length: 90, kind: "data" },
      { offset: 100, length: 250, kind: "zero" },
      { offset: 350, length: 50, kind: "data" },
      { offset: 900, length: 100, kind: "zero" },
    ],
    100,
    1000,
  );
  assert.deepStrictEqual(plan.zero, [
    { offset: 100, length: 200 },
    { offset: 900, length: 100 },
  ]);
  assert.deepStrictEqual(plan.read, [{ offset: 0, length: 100 }, { offset: 300, length: 100 }]);
});

Deno.test("block plan: a partial last block of the disk can be zero", () => {
  const plan = blockPlan([{ offset: 950, length: 70, kind: "zero" }], 100, 1020);
  assert.deepStrictEqual(plan.zero, [{ offset: 1000, length: 20 }]);
  assert.deepStrictEqual(plan.read, [{ offset: 900, length: 100 }]);
});
