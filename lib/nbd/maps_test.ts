import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { allocationMap, dirtyBitmapContext, dirtyExtents } from "./maps.ts";

Deno.test("dirtyExtents keeps flag-1 entries, merged and sorted", () => {
  const entries = [
    { offset: 0, length: 4096, flags: 0 },
    { offset: 4096, length: 4096, flags: 1 },
    { offset: 8192, length: 4096, flags: 1 },
    { offset: 12288, length: 100, flags: 0 },
    { offset: 20000, length: 10, flags: 3 },
  ];
  assertEquals(dirtyExtents(entries), [{ offset: 4096, length: 8192 }, {
    offset: 20000,
    length: 10,
  }]);
  assertEquals(dirtyExtents([]), []);
  assertEquals(dirtyExtents([{ offset: 0, length: 10, flags: 2 }]), []);
  assertEquals(dirtyBitmapContext("bm0"), "qemu:dirty-bitmap:bm0");
});

Deno.test("allocationMap: zero flag -> zero, else data, coalesced, covers [0,size)", () => {
  const entries = [
    { offset: 0, length: 1000, flags: 0 },
    { offset: 1000, length: 1000, flags: 1 }, // hole but not zero: data
    { offset: 2000, length: 1000, flags: 3 },
    { offset: 3000, length: 1000, flags: 2 },
  ];
  assertEquals(allocationMap(entries, 4000), [
    { offset: 0, length: 2000, kind: "data" },
    { offset: 2000, length: 2000, kind: "zero" },
  ]);
});

Deno.test("allocationMap: gaps become data, tails are cut, empty input is all data", () => {
  assertEquals(allocationMap([], 10), [{ offset: 0, length: 10, kind: "data" }]);
  assertEquals(allocationMap([], 0), []);
  assertEquals(
    allocationMap(
      [{ offset: 10, length: 10, flags: 3 }, { offset: 30, length: 100, flags: 3 }],
      50,
    ),
    [
      { offset: 0, length: 10, kind: "data" },
      { offset: 10, length: 10, kind: "zero" },
      { offset: 20, length: 10, kind: "data" },
      { offset: 30, length: 20, kind: "zero" },
    ],
  );
  // overlapping entries: the first wins, unsorted input is sorted
  assertEquals(
    allocationMap([{ offset: 5, length: 10, flags: 0 }, { offset: 0, length: 10, flags: 2 }], 15),
    [{ offset: 0, length: 10, kind: "zero" }, { offset: 10, length: 5, kind: "data" }],
  );
});
