import assert from "node:assert/strict";
import { applyPolicy, isoWeek, keepsAnything } from "./policy.ts";

const at = (iso: string) => ({ id: iso, time: new Date(iso) });

Deno.test("isoWeek: weeks start on Monday, week 1 holds the first Thursday", () => {
  assert.equal(isoWeek(new Date("2026-10-18T23:00:00Z")), "2026-W42"); // Sunday
  assert.equal(isoWeek(new Date("2026-10-19T00:00:00Z")), "2026-W43"); // Monday
  assert.equal(isoWeek(new Date("2021-01-03T12:00:00Z")), "2020-W53");
  assert.equal(isoWeek(new Date("2024-12-30T12:00:00Z")), "2025-W01");
});

Deno.test("applyPolicy: newest of each bucket, N buckets that have points, every reason", () => {
  const points = [
    "2026-09-30T02:00:00Z",
    "2026-10-01T02:00:00Z",
    "2026-10-01T14:00:00Z",
    "2026-10-03T02:00:00Z",
    "2026-10-05T02:00:00Z",
    "2026-10-05T09:00:00Z",
  ].map(at);
  const kept = applyPolicy(points, { last: 1, daily: 3, weekly: 0, monthly: 2 });
  assert.deepEqual(Object.fromEntries(kept), {
    "2026-10-05T09:00:00Z": ["last 1", "daily 2026-10-05", "monthly 2026-10"],
    "2026-10-03T02:00:00Z": ["daily 2026-10-03"],
    "2026-10-01T14:00:00Z": ["daily 2026-10-01"],
    "2026-09-30T02:00:00Z": ["monthly 2026-09"],
  });
  const weekly = applyPolicy(points, { last: 0, daily: 0, weekly: 2, monthly: 0 });
  assert.deepEqual([...weekly.keys()], ["2026-10-05T09:00:00Z", "2026-10-03T02:00:00Z"]);
  assert.equal(applyPolicy(points, { last: 0, daily: 0, weekly: 0, monthly: 0 }).size, 0);
  assert.equal(keepsAnything({ last: 0, daily: 0, weekly: 0, monthly: 0 }), false);
  assert.equal(keepsAnything({ last: 0, daily: 0, weekly: 1, monthly: 0 }), true);
});
