/**
 * The benchmark table: one row per measured fact, with the ratio against the
 * reference tool measured in the same run and the bar it must meet.
 *
 * @module
 */

/** One benchmark result. */
export interface BenchRow {
  /** What was measured. */
  name: string;
  /** dirtybit's figure, human-readable (e.g. "1450 MB/s"). */
  measured: string;
  /** The reference figure, human-readable. */
  reference: string;
  /** measured relative to reference, in the direction of the bar. */
  ratio: number;
  /** The bar, e.g. ">= 0.9x" or "<= 1.05x". */
  bar: string;
  /** Whether the bar is met. */
  ok: boolean;
}

/** A row whose ratio must be at least `min`. */
export function atLeast(
  name: string,
  measured: string,
  reference: string,
  ratio: number,
  min: number,
): BenchRow {
  return { name, measured, reference, ratio, bar: `>= ${min}x`, ok: ratio >= min };
}

/** A row whose ratio must be at most `max`. */
export function atMost(
  name: string,
  measured: string,
  reference: string,
  ratio: number,
  max: number,
): BenchRow {
  return { name, measured, reference, ratio, bar: `<= ${max}x`, ok: ratio <= max };
}

/** MB/s (10^6 bytes per second) of `bytes` in `seconds`. */
export function mbps(bytes: number, seconds: number): string {
  return `${(bytes / seconds / 1e6).toFixed(0)} MB/s`;
}

/** Renders rows as a Markdown table. */
export function renderTable(rows: BenchRow[]): string {
  const lines = [
    "| benchmark | dirtybit | reference | ratio | bar | met |",
    "| --- | --- | --- | --- | --- | --- |",
    ...rows.map((r) =>
      `| ${r.name} | ${r.measured} | ${r.reference} | ${r.ratio.toFixed(2)}x | ${r.bar} | ${
        r.ok ? "yes" : "NO"
      } |`
    ),
  ];
  return lines.join("\n");
}

/** A row that reports a figure against the reference without a bar to meet. */
export function reported(
  name: string,
  measured: string,
  reference: string,
  ratio: number,
): BenchRow {
  return { name, measured, reference, ratio, bar: "reported", ok: true };
}
