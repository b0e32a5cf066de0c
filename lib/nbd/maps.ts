/**
 * Block-status results -> dirtybit's extent vocabulary (lib/core/extent.ts).
 * Pure logic, no I/O.
 *
 * @module
 */
import {
  coalesceMapped,
  type DirtyExtent,
  type MappedExtent,
  normalizeExtents,
} from "../core/extent.ts";
import type { BlockStatusEntry } from "./client.ts";

/** NBD meta context of the allocation map. */
export const BASE_ALLOCATION = "base:allocation";
/** base:allocation flag bits. */
export const STATE_HOLE = 1;
export const STATE_ZERO = 2;
/** qemu:dirty-bitmap:NAME flag bit: dirty. */
export const STATE_DIRTY = 1;

/** The meta context name under which QEMU exports bitmap `name`. */
export function dirtyBitmapContext(name: string): string {
  return `qemu:dirty-bitmap:${name}`;
}

/**
 * Dirty ranges of a `qemu:dirty-bitmap:NAME` block status: entries with flag
 * bit 1 set, sorted and merged.
 */
export function dirtyExtents(entries: Iterable<BlockStatusEntry>): DirtyExtent[] {
  const dirty: DirtyExtent[] = [];
  for (const e of entries) {
    if (e.flags & STATE_DIRTY) dirty.push({ offset: e.offset, length: e.length });
  }
  return normalizeExtents(dirty);
}

/**
 * Allocation map of a `base:allocation` block status, covering exactly
 * `[0, size)`: flag 2 (zero) -> "zero", anything else -> "data". Gaps in
 * `entries` (which a correct server never sends) become "data", the safe
 * reading; where entries overlap the first one wins; entries past `size` are
 * cut off.
 */
export function allocationMap(entries: Iterable<BlockStatusEntry>, size: number): MappedExtent[] {
  const sorted = [...entries].filter((e) => e.length > 0).sort((a, b) => a.offset - b.offset);
  const out: MappedExtent[] = [];
  let pos = 0;
  for (const e of sorted) {
    if (pos >= size) break;
    const start = Math.max(e.offset, pos);
    const end = Math.min(e.offset + e.length, size);
    if (end <= start) continue;
    if (start > pos) out.push({ offset: pos, length: start - pos, kind: "data" });
    const kind = e.flags & STATE_ZERO ? "zero" : "data";
    out.push({ offset: start, length: end - start, kind });
    pos = end;
  }
  if (pos < size) out.push({ offset: pos, length: size - pos, kind: "data" });
  return coalesceMapped(out);
}
