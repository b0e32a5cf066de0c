/**
 * Retention policy: which restorable points of one disk to keep. Pure logic
 * with the usual meaning (as in restic and borg): `last N` keeps the newest N
 * points; `daily N` keeps the newest point of each of the N most recent days
 * that have one, `weekly` per ISO week, `monthly` per calendar month (UTC).
 * A point kept by several rules lists every reason.
 *
 * @module
 */

/** How many points to keep by each rule (0: the rule keeps nothing). */
export interface RetentionPolicy {
  readonly last: number;
  readonly daily: number;
  readonly weekly: number;
  readonly monthly: number;
}

/** A point to decide on. */
export interface PolicyPoint {
  readonly id: string;
  readonly time: Date;
}

/** True when the policy keeps anything at all (pruning with none would remove everything). */
export function keepsAnything(policy: RetentionPolicy): boolean {
  return policy.last > 0 || policy.daily > 0 || policy.weekly > 0 || policy.monthly > 0;
}

/** ISO 8601 week of `t` as `YYYY-Www` (weeks start on Monday; week 1 holds the first Thursday). */
export function isoWeek(t: Date): string {
  const d = new Date(Date.UTC(t.getUTCFullYear(), t.getUTCMonth(), t.getUTCDate()));
  const weekday = (d.getUTCDay() + 6) % 7; // Monday 0
  d.setUTCDate(d.getUTCDate() - weekday + 3); // the Thursday of this week decides the year
  const year = d.getUTCFullYear();
  const week = 1 + Math.floor((d.getTime() - Date.UTC(year, 0, 4)) / (7 * 86_400_000) + 3 / 7);
  return `${year}-W${String(week).padStart(2, "0")}`;
}

/** The bucket of each rule; `last` has one bucket per point. */
const buckets: readonly { rule: keyof RetentionPolicy; key: ((t: Date) => string) | null }[] = [
  { rule: "last", key: null },
  { rule: "daily", key: (t) => t.toISOString().slice(0, 10) },
  { rule: "weekly", key: isoWeek },
  { rule: "monthly", key: (t) => t.toISOString().slice(0, 7) },
];

/** The points `policy` keeps, each with its reasons (e.g. "daily 2026-12-01"). */
export function applyPolicy(
  points: readonly PolicyPoint[],
  policy: RetentionPolicy,
): Map<string, string[]> {
  const newestFirst = [...points].sort((a, b) =>
    b.time.getTime() - a.time.getTime() || b.id.localeCompare(a.id)
  );
  const kept = new Map<string, string[]>();
  for (const { rule, key } of buckets) {
    const seen = new Set<string>();
    for (const p of newestFirst) {
      if (seen.size >= policy[rule]) break;
      const k = key ? key(p.time) : p.id;
      if (seen.has(k)) continue;
      seen.add(k);
      const reasons = kept.get(p.id) ?? [];
      reasons.push(key ? `${rule} ${k}` : `last ${seen.size}`);
      kept.set(p.id, reasons);
    }
  }
  return kept;
}
