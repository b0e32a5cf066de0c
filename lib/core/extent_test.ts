import assert from "node:assert/strict";
import {
  alignExtents,
  blockRunRanges,
  clipExtents,
  coalesceMapped,
  intersectMap,
  type MappedExtent,
  normalizeExtents,
  splitExtents,
  subtractExtents,
  totalLength,
} from "./extent.ts";

const map: MappedExtent[] = [
  { offset: 0, length: 100, kind: "data" },
  { offset: 100, length: 100, kind: "zero" },
  { offset: 200, length: 100, kind: "data" },
];

Deno.test("normalizing sorts, merges overlapping and touching extents, drops empty ones", () => {
  assert.deepStrictEqual(
    normalizeExtents([
      { offset: 50, length: 10 },
      { offset: 0, length: 20 },
      { offset: 20, length: 5 },
      { offset: 30, length: 0 },
      { offset: 55, length: 20 },
    ]),
    [{ offset: 0, length: 25 }, { offset: 50, length: 25 }],
  );
  assert.deepStrictEqual(normalizeExtents([]), []);
});

Deno.test("aligning widens to whole blocks, the last one cut at the disk size", () => {
  assert.deepStrictEqual(
    alignExtents([{ offset: 10, length: 5 }, { offset: 220, length: 10 }], 100, 250),
    [{ offset: 0, length: 100 }, { offset: 200, length: 50 }],
  );
  // Widened neighbours merge.
  assert.deepStrictEqual(
    alignExtents([{ offset: 10, length: 5 }, { offset: 120, length: 5 }], 100, 250),
    [{ offset: 0, length: 200 }],
  );
});

Deno.test("splitting cuts at the maximum length and keeps other fields", () => {
  assert.deepStrictEqual(
    [...splitExtents([{ offset: 10, length: 25, kind: "data" as const }], 10)],
    [
      { offset: 10, length: 10, kind: "data" },
      { offset: 20, length: 10, kind: "data" },
      { offset: 30, length: 5, kind: "data" },
    ],
  );
});

Deno.test("total length sums the extents", () => {
  assert.equal(totalLength(map), 300);
  assert.equal(totalLength([]), 0);
});

Deno.test("coalescing merges neighbours of one kind and refuses overlaps", () => {
  assert.deepStrictEqual(
    coalesceMapped([
      { offset: 0, length: 10, kind: "data" },
      { offset: 10, length: 10, kind: "data" },
      { offset: 20, length: 0, kind: "zero" },
      { offset: 20, length: 10, kind: "zero" },
    ]),
    [{ offset: 0, length: 20, kind: "data" }, { offset: 20, length: 10, kind: "zero" }],
  );
  assert.throws(
    () =>
      coalesceMapped([{ offset: 0, length: 10, kind: "data" }, {
        offset: 5,
        length: 10,
        kind: "zero",
      }]),
    RangeError,
  );
});

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
  // Unsorted, overlapping ranges are normalized first.
  assert.deepStrictEqual(
    intersectMap([{ offset: 20, length: 10 }, { offset: 0, length: 25 }], map),
    [{ offset: 0, length: 30, kind: "data" }],
  );
});

Deno.test("subtracting extents", () => {
  assert.deepStrictEqual(
    subtractExtents([{ offset: 0, length: 100 }, { offset: 200, length: 50 }], [
      { offset: 10, length: 10 },
      { offset: 90, length: 120 },
    ]),
    [{ offset: 0, length: 10 }, { offset: 20, length: 70 }, { offset: 210, length: 40 }],
  );
  assert.deepStrictEqual(subtractExtents([{ offset: 0, length: 10 }], []), [
    { offset: 0, length: 10 },
  ]);
  assert.deepStrictEqual(
    subtractExtents([{ offset: 0, length: 10 }], [{ offset: 0, length: 10 }]),
    [],
  );
});

Deno.test("clipping keeps the parts below the end, with their kind", () => {
  assert.deepStrictEqual(clipExtents(map, 150), [
    { offset: 0, length: 100, kind: "data" },
    { offset: 100, length: 50, kind: "zero" },
  ]);
  assert.deepStrictEqual(clipExtents(map, 100), [{ offset: 0, length: 100, kind: "data" }]);
  assert.deepStrictEqual(clipExtents(map, 0), []);
});

Deno.test("block runs become byte ranges of whole blocks, at most the maximum length", () => {
  assert.deepStrictEqual(
    [...blockRunRanges([{ start: 1, end: 4 }, { start: 10, end: 11 }], 100, 250)],
    [
      { offset: 100, length: 200 },
      { offset: 300, length: 100 },
      { offset: 1000, length: 100 },
    ],
  );
  // A block at least as large as the maximum is read in pieces of the maximum.
  assert.deepStrictEqual([...blockRunRanges([{ start: 1, end: 2 }], 400, 200)], [
    { offset: 400, length: 200 },
    { offset: 600, length: 200 },
  ]);
});
