import assert from "node:assert/strict";
import type { StreamHeader } from "../stream/format.ts";
import { type CatalogEntry, groupChains, restorePath } from "./chains.ts";
import { planPrune } from "./prune_plan.ts";

function entry(
  path: string,
  id: string,
  parent: string | null,
  chain: string,
  day: number,
  level: StreamHeader["level"] = parent === null ? "full" : "incremental",
): CatalogEntry {
  const header: StreamHeader = {
    version: 2,
    disk: "vda",
    virtualSize: 1 << 20,
    blockSize: 65536,
    level,
    backupId: id,
    parentId: parent,
    chainId: chain,
    checkpoint: id,
    createdAt: new Date(Date.UTC(2026, 0, 1 + day)).toISOString(),
    compression: "none",
  };
  return { path, header, size: 100 };
}

// f0 <- i1 <- i2 <- i3, and d4 a differential on f0; m2 the merged full of point i2.
const f0 = entry("/b/f0.dbit", "f0", null, "f0", 0);
const i1 = entry("/b/i1.dbit", "i1", "f0", "f0", 1);
const i2 = entry("/b/i2.dbit", "i2", "i1", "f0", 2);
const i3 = entry("/b/i3.dbit", "i3", "i2", "f0", 3);
const d4 = entry("/b/d4.dbit", "d4", "f0", "f0", 4, "differential");
const m2 = { ...entry("/b/m2.dbit", "i2", null, "f0", 2), size: 50 };

Deno.test("restorePath: shortest way through merged fulls; null when a parent is missing", () => {
  assert.deepEqual(restorePath([f0, i1, i2, i3], "i3")?.map((e) => e.path), [
    f0.path,
    i1.path,
    i2.path,
    i3.path,
  ]);
  assert.deepEqual(restorePath([f0, i1, i2, i3, m2], "i3")?.map((e) => e.path), [
    m2.path,
    i3.path,
  ]);
  assert.equal(restorePath([i1, i2, i3], "i3"), null);
  assert.deepEqual(restorePath([i1, i2, i3, m2], "i3")?.map((e) => e.path), [m2.path, i3.path]);
});

Deno.test("groupChains: per directory, disk and chain; broken when a parent is missing", () => {
  const other = entry("/c/f0.dbit", "g0", null, "g0", 0);
  const chains = groupChains([i2, f0, i1, other, entry("/b/x.dbit", "x2", "x1", "x0", 5)]);
  assert.deepEqual(chains.map((c) => [c.dir, c.chainId, c.broken, c.missing]), [
    ["/b", "f0", false, []],
    ["/b", "x0", true, ["x1"]],
    ["/c", "g0", false, []],
  ]);
  assert.deepEqual(chains[0].entries.map((e) => e.path), [f0.path, i1.path, i2.path]);
});

Deno.test("planPrune: never removes what a kept point needs; merging frees the old full", () => {
  const all = [f0, i1, i2, i3];
  const keep = (plan: ReturnType<typeof planPrune>) =>
    plan.decisions.filter((d) => d.keep).map((d) => d.path);
  const last1 = { last: 1, daily: 0, weekly: 0, monthly: 0 };
  assert.deepEqual(keep(planPrune(all, last1, false)), all.map((e) => e.path));
  const merged = planPrune(all, { ...last1, last: 2 }, true);
  assert.deepEqual(merged.merges, [{
    backupId: "i2",
    streams: [f0.path, i1.path, i2.path],
    out: "/b/i2.merged.dbit",
  }]);
  assert.deepEqual(keep(merged), ["/b/i2.merged.dbit", i3.path]);
  // A differential keeps its own full even when merging.
  const withDiff = planPrune([...all, d4], { ...last1, last: 2 }, true);
  assert.deepEqual(keep(withDiff).sort(), [f0.path, "/b/i3.merged.dbit", d4.path].sort());
  // A broken chain is left alone.
  const broken = planPrune([i1, i2], last1, false);
  assert.ok(broken.decisions.every((d) => d.keep && /broken/.test(d.why)));
});
