/**
 * What `dirtybit prune` does to the streams found: pure logic. Per directory
 * and disk, the retention policy picks restorable points; every stream on the
 * restore path of a kept point stays, everything else goes. A broken chain
 * (a parent is missing) is left alone: its streams may be needed with a parent
 * kept elsewhere. With merging, the oldest kept point of a chain that is not a
 * full becomes a new synthetic full, so the older full and incrementals it was
 * built from can go (a differential still keeps its own full).
 *
 * @module
 */
import { type CatalogEntry, type Chain, groupChains, syntheticFull } from "./chains.ts";
import { applyPolicy, type RetentionPolicy } from "./policy.ts";

/** A stream's fate, with the reason printed to the operator. */
export interface StreamDecision {
  readonly path: string;
  readonly backupId: string;
  readonly keep: boolean;
  readonly why: string;
}

/** A synthetic full to write before anything is removed. */
export interface PlannedMerge {
  readonly backupId: string;
  /** The streams to merge, full first. */
  readonly streams: readonly string[];
  readonly out: string;
}

/** Everything prune will do, in order: merges, then removals. */
export interface PrunePlan {
  readonly merges: readonly PlannedMerge[];
  readonly decisions: readonly StreamDecision[];
}

/** Where the synthetic full of the point held by `path` goes: beside it. */
export function mergedPath(path: string): string {
  return `${path.replace(/\.dbit$/, "")}.merged.dbit`;
}

/** Merges that let the oldest kept point of each chain stand on its own. */
function plannedMerges(chains: readonly Chain[], kept: Map<string, string[]>): PlannedMerge[] {
  const merges: PlannedMerge[] = [];
  for (const chain of chains) {
    if (chain.broken) continue;
    const oldest = chain.points.find((p) => kept.has(p.backupId));
    if (!oldest?.restore || oldest.restore.length < 2) continue;
    merges.push({
      backupId: oldest.backupId,
      streams: oldest.restore.map((e) => e.path),
      out: mergedPath(oldest.restore.at(-1)!.path),
    });
  }
  return merges;
}

/** Plans a prune of `entries` under `policy`; `merge` folds old incrementals into new fulls. */
export function planPrune(
  entries: readonly CatalogEntry[],
  policy: RetentionPolicy,
  merge: boolean,
): PrunePlan {
  const series = new Map<string, Chain[]>();
  for (const chain of groupChains(entries)) {
    series.set(chain.series, [...series.get(chain.series) ?? [], chain]);
  }
  const merges: PlannedMerge[] = [];
  const decisions: StreamDecision[] = [];
  for (let chains of series.values()) {
    const kept = applyPolicy(
      chains.flatMap((c) =>
        c.points.filter((p) => p.restore).map((p) => ({
          id: p.backupId,
          time: new Date(p.createdAt),
        }))
      ),
      policy,
    );
    if (merge) {
      const planned = plannedMerges(chains, kept);
      merges.push(...planned);
      // The plan continues as if the synthetic fulls were already there.
      const byPath = new Map(entries.map((e) => [e.path, e]));
      const synthetic = planned.map((m) => {
        const last = byPath.get(m.streams.at(-1)!)!;
        return { path: m.out, header: syntheticFull(last.header), size: 0 };
      });
      chains = groupChains([...chains.flatMap((c) => c.entries), ...synthetic]);
    }
    decisions.push(...decide(chains, kept));
  }
  return { merges, decisions };
}

function decide(chains: readonly Chain[], kept: Map<string, string[]>): StreamDecision[] {
  const decisions: StreamDecision[] = [];
  for (const chain of chains) {
    if (chain.broken) {
      const why = `chain ${chain.chainId} is broken (missing ${
        chain.missing.join(", ")
      }): left alone`;
      for (const e of chain.entries) {
        decisions.push({ path: e.path, backupId: e.header.backupId, keep: true, why });
      }
      continue;
    }
    // The reason each needed stream stays: the first kept point (oldest) that needs it.
    const needs = new Map<string, string>();
    for (const p of chain.points) {
      const reasons = kept.get(p.backupId);
      if (!reasons) continue;
      for (const e of p.restore!) {
        if (needs.has(e.path)) continue;
        needs.set(
          e.path,
          e === p.restore!.at(-1)
            ? `point ${p.backupId} kept (${reasons.join(", ")})`
            : `needed to restore kept point ${p.backupId}`,
        );
      }
    }
    for (const e of chain.entries) {
      const id = e.header.backupId;
      const why = needs.get(e.path) ??
        (kept.has(id)
          ? `point ${id} is restored without it (from ${
            chain.points.find((p) => p.backupId === id)!.restore!.map((s) => s.path).join(" ")
          })`
          : `point ${id} is not kept by the policy`);
      decisions.push({ path: e.path, backupId: id, keep: needs.has(e.path), why });
    }
  }
  return decisions;
}
