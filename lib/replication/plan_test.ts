import assert from "node:assert/strict";
import type { MappedExtent } from "../core/extent.ts";
import { intersectMap, seedWindows } from "./plan.ts";

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
