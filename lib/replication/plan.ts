/**
 * What a batch sends, from maps: the dirty ranges (or a seed window) cut
 * along the allocation map, so ranges that read as zeros go as zero records
 * and are never read (the L3 layer before any read). Pure.
 *
 * @module
 */
import {
  coalesceMapped,
  type Extent,
  extentEnd,
  type MappedExtent,
  normalizeExtents,
} from "../core/extent.ts";

/**
 * The parts of `ranges` with their kind from `map` (sorted, non-overlapping,
 * covering the disk). Parts of `ranges` outside `map` are dropped.
 */
export function intersectMap(
  ranges: Iterable<Extent>,
  map: readonly MappedExtent[],
): MappedExtent[] {
  const out: MappedExtent[] = [];
  let i = 0;
  for (const r of normalizeExtents(ranges)) {
    while (i < map.length && extentEnd(map[i]) <= r.offset) i++;
    for (let j = i; j < map.length && map[j].offset < extentEnd(r); j++) {
      const start = Math.max(r.offset, map[j].offset);
      const end = Math.min(extentEnd(r), extentEnd(map[j]));
      if (end > start) out.push({ offset: start, length: end - start, kind: map[j].kind });
    }
  }
  return coalesceMapped(out);
}

/** Seed windows `[start, end)` of at most `window` bytes from `from` to `size`. */
export function* seedWindows(size: number, from: number, window: number): Generator<Extent> {
  for (let start = from; start < size; start += window) {
    yield { offset: start, length: Math.min(window, size - start) };
  }
}
