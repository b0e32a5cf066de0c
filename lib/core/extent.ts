/**
 * The one block-range vocabulary of dirtybit. A dirty bitmap, an NBD allocation
 * map, a stream record and an image writer all speak in {@link Extent}s: byte
 * ranges `[offset, offset + length)` of a virtual disk. Pure logic, no I/O.
 *
 * @module
 */

/** A byte range of a virtual disk. Offsets and lengths are exact integers (< 2^53). */
export interface Extent {
  readonly offset: number;
  readonly length: number;
}

/** What a range of a disk holds, as far as the writer of an image or stream cares. */
export type ExtentKind = "data" | "zero";

/** A range with its content kind: `zero` reads back as zeros and need not be stored. */
export interface MappedExtent extends Extent {
  readonly kind: ExtentKind;
}

/** A range that a dirty bitmap reports as written since a checkpoint. */
export type DirtyExtent = Extent;

/** End offset (exclusive) of an extent. */
export function extentEnd(e: Extent): number {
  return e.offset + e.length;
}

/**
 * Sorts, merges overlapping and touching extents and drops empty ones.
 * The result is the canonical form every layer hands on.
 */
export function normalizeExtents(extents: Iterable<Extent>): Extent[] {
  const sorted = [...extents].filter((e) => e.length > 0).sort((a, b) => a.offset - b.offset);
  const out: Extent[] = [];
  for (const e of sorted) {
    const last = out[out.length - 1];
    if (last && e.offset <= extentEnd(last)) {
      const end = Math.max(extentEnd(last), extentEnd(e));
      out[out.length - 1] = { offset: last.offset, length: end - last.offset };
    } else {
      out.push({ offset: e.offset, length: e.length });
    }
  }
  return out;
}

/**
 * Widens every extent to whole blocks of `blockSize` (the last block of a disk
 * may be partial: nothing reaches past `diskSize`), then normalizes.
 */
export function alignExtents(
  extents: Iterable<Extent>,
  blockSize: number,
  diskSize: number,
): Extent[] {
  const widened: Extent[] = [];
  for (const e of extents) {
    if (e.length <= 0) continue;
    const start = Math.floor(e.offset / blockSize) * blockSize;
    const end = Math.min(Math.ceil(extentEnd(e) / blockSize) * blockSize, diskSize);
    if (end > start) widened.push({ offset: start, length: end - start });
  }
  return normalizeExtents(widened);
}

/** Cuts extents into pieces of at most `maxLength` bytes (NBD request size). */
export function* splitExtents<T extends Extent>(
  extents: Iterable<T>,
  maxLength: number,
): Generator<T> {
  for (const e of extents) {
    for (let off = e.offset; off < extentEnd(e); off += maxLength) {
      yield { ...e, offset: off, length: Math.min(maxLength, extentEnd(e) - off) };
    }
  }
}

/** Total bytes covered by the extents (assumed not to overlap). */
export function totalLength(extents: Iterable<Extent>): number {
  let sum = 0;
  for (const e of extents) sum += e.length;
  return sum;
}

/**
 * Merges neighbouring mapped extents of the same kind and checks that they are
 * sorted and do not overlap (an allocation map must be).
 */
export function coalesceMapped(extents: Iterable<MappedExtent>): MappedExtent[] {
  const out: MappedExtent[] = [];
  for (const e of extents) {
    if (e.length <= 0) continue;
    const last = out[out.length - 1];
    if (last && e.offset < extentEnd(last)) {
      throw new RangeError(`extent at ${e.offset} overlaps the one ending at ${extentEnd(last)}`);
    }
    if (last && last.kind === e.kind && extentEnd(last) === e.offset) {
      out[out.length - 1] = { offset: last.offset, length: last.length + e.length, kind: e.kind };
    } else {
      out.push({ offset: e.offset, length: e.length, kind: e.kind });
    }
  }
  return out;
}

/**
 * The parts of `ranges` with their kind from `map` (sorted, non-overlapping,
 * covering the disk): dirty ranges cut along an allocation map. Parts of
 * `ranges` outside `map` are dropped.
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

/** `from` minus `cut`, both normalized (sorted, disjoint). */
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

/** The parts of the extents below `end` (each keeps its other fields, e.g. its kind). */
export function clipExtents<T extends Extent>(extents: Iterable<T>, end: number): T[] {
  const out: T[] = [];
  for (const e of extents) {
    if (e.offset < end) out.push({ ...e, length: Math.min(e.length, end - e.offset) });
  }
  return out;
}

/**
 * The byte ranges of runs of whole blocks `[start, end)` (block indices), in
 * pieces of at most `maxLength` bytes: whole blocks per piece, or pieces of
 * `maxLength` when a block is at least that large (image block sizes are
 * powers of two, so the pieces still start at block boundaries).
 */
export function* blockRunRanges(
  runs: Iterable<{ readonly start: number; readonly end: number }>,
  blockSize: number,
  maxLength: number,
): Generator<Extent> {
  const step = blockSize >= maxLength ? maxLength : Math.floor(maxLength / blockSize) * blockSize;
  for (const run of runs) {
    const end = run.end * blockSize;
    for (let off = run.start * blockSize; off < end; off += step) {
      yield { offset: off, length: Math.min(step, end - off) };
    }
  }
}

/**
 * How a range of a backup is stored: data, zeros a record says, or a hole
 * nothing mentions (reads as zeros too).
 */
export type AllocationKind = "data" | "zero" | "hole";

/** A range with how it is stored. */
export interface AllocatedExtent extends Extent {
  readonly kind: AllocationKind;
}
