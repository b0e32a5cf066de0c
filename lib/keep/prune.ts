/**
 * `prune` and `list` as use cases: find the streams, plan, then (unless it is
 * a dry run) write the planned synthetic fulls and only then remove streams.
 *
 * @module
 */
import { describeError, TargetError, UsageError, wrapError } from "../core/errors.ts";
import type { Compression } from "../stream/compression.ts";
import { catalog, type UnreadableStream } from "./catalog.ts";
import { type Chain, groupChains } from "./chains.ts";
import { mergeChain, type MergeResult } from "./merge.ts";
import { keepsAnything, type RetentionPolicy } from "./policy.ts";
import { planPrune, type PrunePlan } from "./prune_plan.ts";

/** The chains found under directories. */
export interface Listing {
  readonly chains: Chain[];
  readonly unreadable: UnreadableStream[];
}

/** Finds every stream under `dirs` and groups them into chains. */
export async function listChains(dirs: readonly string[]): Promise<Listing> {
  const found = await catalog(dirs);
  return { chains: groupChains(found.entries), unreadable: found.unreadable };
}

/** What to prune. */
export interface PruneRequest {
  readonly dir: string;
  readonly policy: RetentionPolicy;
  readonly dryRun: boolean;
  readonly merge: boolean;
  readonly compression?: Compression;
  readonly signal?: AbortSignal;
}

/** The plan and what was done of it. */
export interface PruneResult {
  readonly plan: PrunePlan;
  readonly merged: MergeResult[];
  readonly removed: string[];
  readonly unreadable: UnreadableStream[];
}

/** Prunes `req.dir` under its policy. */
export async function prune(req: PruneRequest): Promise<PruneResult> {
  if (!keepsAnything(req.policy)) {
    throw new UsageError((p) =>
      `prune: give at least one of ${
        ["keep_last", "keep_daily", "keep_weekly", "keep_monthly"].map(p).join(", ")
      }`
    );
  }
  const found = await catalog([req.dir]);
  const plan = planPrune(found.entries, req.policy, req.merge);
  const result = { plan, merged: [] as MergeResult[], removed: [] as string[] };
  if (req.dryRun) return { ...result, unreadable: found.unreadable };
  for (const m of plan.merges) {
    result.merged.push(
      await mergeChain({
        streams: m.streams,
        out: m.out,
        compression: req.compression,
        signal: req.signal,
      }),
    );
  }
  for (const d of plan.decisions) {
    if (d.keep) continue;
    try {
      await Deno.remove(d.path);
    } catch (err) {
      throw wrapError(err, TargetError, `prune: cannot remove ${d.path}: ${describeError(err)}`);
    }
    result.removed.push(d.path);
  }
  return { ...result, unreadable: found.unreadable };
}
