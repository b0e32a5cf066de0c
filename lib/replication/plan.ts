/**
 * What a batch sends, from maps: the dirty ranges (or a seed window) cut
 * along the allocation map, so ranges that read as zeros go as zero records
 * and are never read (the L3 layer before any read). Pure.
 *
 * @module
 */
import {
  alignExtents,
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

/**
 * Cuts a batch along hash blocks (layer 2 works on whole blocks): the blocks
 * lying entirely inside zero ranges go as zero records unread, every other
 * block the batch touches is read whole and classified. Pure.
 */
export function blockPlan(
  extents: readonly MappedExtent[],
  blockSize: number,
  diskSize: number,
): { read: Extent[]; zero: Extent[] } {
  const zero = normalizeExtents(
    extents.filter((e) => e.kind === "zero").map((e) => {
      const start = Math.ceil(e.offset / blockSize) * blockSize;
      const end = extentEnd(e) === diskSize
        ? diskSize
        : Math.floor(extentEnd(e) / blockSize) * blockSize;
      return { offset: start, length: Math.max(0, end - start) };
    }),
  );
  return { read: subtractExtents(alignExtents(extents, blockSize, diskSize), zero), zero };
}

/** `from` minus `cut`, both normalized (sorted, disjoint). Pure. */
export function subtractExtents(from: readonly Extent[], cut: readonly Extent[]): Extent[] {
  const out: Extent[] = [];
  let j = 0;
  for (const e of from) {
    let start = e.offset;
    const end = extentEnd(e);
    while (j < cut.length && extentEnd(cut[j]) <= start) j++;
    for (let k = j; k < cut.length && cut[k].offset < end; k++) {
      if (cut[k].offset > start) out.push({ offset: start, length: cut[k].offset - start });
      start = Math.max(start, extentEnd(cut[k]));
    }
    if (end > start) out.push({ offset: start, length: end - start });
  }
  return out;
}
