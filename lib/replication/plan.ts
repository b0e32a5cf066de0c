/**
 * What a batch sends, from maps: the dirty ranges (or a seed window) cut
 * along the allocation map, so ranges that read as zeros go as zero records
 * and are never read (the L3 layer before any read). Pure.
 *
 * @module
 */
import {
  alignExtents,
  type Extent,
  extentEnd,
  type MappedExtent,
  normalizeExtents,
  subtractExtents,
} from "../core/extent.ts";

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
