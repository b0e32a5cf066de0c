import assert from "node:assert/strict";
import type { MappedExtent } from "../core/extent.ts";
import { blockPlan, intersectMap, seedWindows, subtractExtents } from "./plan.ts";

const map: MappedExtent[] = [
  { offset: 0, length: 100, kind: "data" },
  { offset: 100, length: 100, kind: "zero" },
  { offset: 200, length: 100, kind: "data" },
];

Deno.test("dirty ranges take their kind from the allocation map", () => {
  assert.deepStrictEqual(
    intersectMap([{ offset: 50, length: 200 }, { offset: 290, length: 50 }], map),
    [
      { offset: 50, length: 50, kind: "data" },
      { offset: 100, length: 100, kind: "zero" },
      { offset: 200, length: 50, kind: "data" },
      { offset: 290, length: 10, kind: "data" },
    ],
  );
  assert.deepStrictEqual(intersectMap([], map), []);
  assert.deepStrictEqual(intersectMap([{ offset: 120, length: 10 }], map), [
    { offset: 120, length: 10, kind: "zero" },
  ]);
});

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

Deno.test("subtracting extents", () => {
  assert.deepStrictEqual(
    subtractExtents([{ offset: 0, length: 100 }, { offset: 200, length: 50 }], [
      { offset: 10, length: 10 },
      { offset: 90, length: 120 },
    ]),
    [{ offset: 0, length: 10 }, { offset: 20, length: 70 }, { offset: 210, length: 40 }],
  );
});
