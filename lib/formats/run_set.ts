/**
 * A set of block indices kept as sorted runs, with rank queries. Image writers
 * use it for "which clusters/grains/blocks are allocated" and "where does the
 * n-th allocated one land": memory grows with the number of runs (extents of
 * the allocation map), never with the disk size. Pure logic, no I/O.
 *
 * @module
 */
import type { MappedExtent } from "../core/extent.ts";

/** A run of consecutive block indices `[start, end)`. */
export interface Run {
  readonly start: number;
  readonly end: number;
}

/** Sorted, disjoint, non-touching runs of block indices with O(log n) rank. */
export class RunSet {
  /** The runs, sorted and merged. */
  readonly runs: readonly Run[];
  /** Number of members before each run (prefix sums), for {@link rank}. */
  readonly #before: number[];
  /** Total number of members. */
  readonly count: number;

  constructor(runs: Iterable<Run>) {
    const sorted = [...runs].filter((r) => r.end > r.start).sort((a, b) => a.start - b.start);
    const merged: Run[] = [];
    for (const r of sorted) {
      const last = merged[merged.length - 1];
      if (last && r.start <= last.end) {
        merged[merged.length - 1] = { start: last.start, end: Math.max(last.end, r.end) };
      } else {
        merged.push({ start: r.start, end: r.end });
      }
    }
    this.runs = merged;
    this.#before = [];
    let n = 0;
    for (const r of merged) {
      this.#before.push(n);
      n += r.end - r.start;
    }
    this.count = n;
  }

  /**
   * The blocks of `blockSize` bytes that hold any `data` extent of `map`
   * (zero extents and holes are left out).
   */
  static fromMap(map: Iterable<MappedExtent>, blockSize: number): RunSet {
    const runs: Run[] = [];
    for (const e of map) {
      if (e.kind !== "data" || e.length <= 0) continue;
      runs.push({
        start: Math.floor(e.offset / blockSize),
        end: Math.ceil((e.offset + e.length) / blockSize),
      });
    }
    return new RunSet(runs);
  }

  /** The set of `floor(i / groupSize)` for every member i (e.g. L1 index of a cluster). */
  group(groupSize: number): RunSet {
    return new RunSet(
      this.runs.map((r) => ({
        start: Math.floor(r.start / groupSize),
        end: Math.floor((r.end - 1) / groupSize) + 1,
      })),
    );
  }

  /** Index of the run containing i or, if none, of the last run starting before i (-1). */
  #find(i: number): number {
    let lo = 0, hi = this.runs.length - 1, found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.runs[mid].start <= i) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    return found;
  }

  /** Whether i is a member. */
  has(i: number): boolean {
    const k = this.#find(i);
    return k >= 0 && i < this.runs[k].end;
  }

  /** Number of members smaller than i. */
  rank(i: number): number {
    const k = this.#find(i);
    if (k < 0) return 0;
    const r = this.runs[k];
    return this.#before[k] + Math.min(i, r.end) - r.start;
  }

  /** Members in `[lo, hi)` in ascending order. */
  *membersIn(lo: number, hi: number): Generator<number> {
    for (let k = Math.max(0, this.#find(lo)); k < this.runs.length; k++) {
      const r = this.runs[k];
      if (r.start >= hi) return;
      for (let i = Math.max(lo, r.start); i < Math.min(hi, r.end); i++) yield i;
    }
  }

  /** The runs clipped to `[lo, hi)`. */
  *runsIn(lo: number, hi: number): Generator<Run> {
    for (let k = Math.max(0, this.#find(lo)); k < this.runs.length; k++) {
      const r = this.runs[k];
      if (r.start >= hi) return;
      const start = Math.max(lo, r.start), end = Math.min(hi, r.end);
      if (end > start) yield { start, end };
    }
  }
}
