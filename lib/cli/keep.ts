/**
 * `dirtybit list`, `merge` and `prune`: finding, merging and retiring backup
 * streams. Flags become requests for lib/keep; this file only words the answers.
 *
 * @module
 */
import type { Command } from "./command.ts";
import { cancellable } from "./stop_signals.ts";
import { compressionFlag, flagsOf, type FlagTable, integer, parseFlags, required } from "./args.ts";
import { formatBytes } from "../core/bytes.ts";
import { Progress, PROGRESS_FLAGS, PROGRESS_HELP } from "./progress.ts";
import { timing } from "./progress_view.ts";
import { requireOutputDir } from "./output.ts";
import { ChainError, UsageError } from "../core/errors.ts";
import type { Chain, ChainPoint } from "../keep/chains.ts";
import { mergeChain } from "../keep/merge.ts";
import { listChains, prune } from "../keep/prune.ts";

/** A path as a shell word. */
function shellWord(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

/** The command that restores `point` of `chain`. */
function restoreCommandOf(chain: Chain, point: ChainPoint): string | null {
  if (!point.restore) return null;
  const out = `${chain.disk.replace(/[^\w.-]+/g, "_")}.raw`;
  return ["dirtybit restore --out", out, ...point.restore.map((e) => shellWord(e.path))].join(" ");
}

function chainJson(chain: Chain) {
  const ids = new Set(chain.entries.map((e) => e.header.backupId));
  return {
    dir: chain.dir,
    disk: chain.disk,
    chainId: chain.chainId,
    broken: chain.broken,
    missing: chain.missing,
    streams: chain.entries.map((e) => ({
      path: e.path,
      level: e.header.level,
      backupId: e.header.backupId,
      parentId: e.header.parentId,
      parentPresent: e.header.parentId === null ? null : ids.has(e.header.parentId),
      createdAt: e.header.createdAt,
      size: e.size,
      virtualSize: e.header.virtualSize,
    })),
    points: chain.points.map((p) => ({
      backupId: p.backupId,
      level: p.level,
      createdAt: p.createdAt,
      restorable: p.restore !== null,
      streams: p.restore?.map((e) => e.path) ?? null,
      command: restoreCommandOf(chain, p),
    })),
  };
}

function describeChain(chain: Chain): string {
  const ids = new Set(chain.entries.map((e) => e.header.backupId));
  const state = chain.broken ? `BROKEN: missing ${chain.missing.join(", ")}` : "complete";
  const lines = [`${chain.dir}  disk ${chain.disk}  chain ${chain.chainId}  (${state})`];
  for (const e of chain.entries) {
    const h = e.header;
    const parent = h.parentId === null
      ? ""
      : ids.has(h.parentId)
      ? `parent ${h.parentId}`
      : `parent ${h.parentId} MISSING`;
    lines.push(
      `  ${h.createdAt}  ${h.level.padEnd(12)} ${formatBytes(e.size).padStart(10)}  ${
        e.path.slice(chain.dir.length + 1)
      }  ${h.backupId}  ${parent}`.trimEnd(),
    );
  }
  lines.push("  restorable points:");
  for (const p of chain.points) {
    const cmd = restoreCommandOf(chain, p);
    lines.push(
      `    ${p.createdAt}  ${p.backupId}: ${cmd ?? "cannot be restored (parent missing)"}`,
    );
  }
  return lines.join("\n");
}

const LIST_HELP = `
usage: dirtybit list DIR... [--json] [--check]

Finds every backup stream under each DIR (recursively; only stream headers are
read), groups them into chains per directory and disk, and shows each stream
(level, time, size, parent present or missing) and each restorable point with
the command that restores it. A chain whose parent stream is missing is shown
as broken. 'dirtybit verify' checks the streams' contents.

  --json     print the listing as JSON on stdout
  --check    exit 4 when a chain is broken or a stream cannot be read (monitoring)
`;

export const listCommand: Command = {
  name: "list",
  summary: "list the backup chains and restorable points found under directories",
  async run(args) {
    const parsed = parseFlags(
      "list",
      args,
      { json: { type: "boolean" }, check: { type: "boolean" } },
      LIST_HELP,
    );
    if (!parsed) return 0;
    if (parsed.positionals.length === 0) throw new UsageError("list: name at least one DIR");
    const { chains, unreadable } = await listChains(parsed.positionals);
    if (parsed.values.json) {
      console.log(JSON.stringify({ chains: chains.map(chainJson), unreadable }, null, 2));
    } else {
      console.log(chains.map(describeChain).join("\n\n") || "no backup streams found");
      for (const u of unreadable) console.log(`UNREADABLE ${u.path}: ${u.error}`);
    }
    const broken = chains.filter((c) => c.broken).length;
    if (parsed.values.check && (broken > 0 || unreadable.length > 0)) {
      throw new ChainError(
        `list --check: ${broken} broken chain(s), ${unreadable.length} unreadable stream(s)`,
      );
    }
    return 0;
  },
};

const MERGE_HELP = `
usage: dirtybit merge STREAM... --out FILE [--compress C] [--force] [--json]

Merges a full and its incrementals (or a full and a differential), given in
chain order, into one new full stream of the last point (a synthetic full),
without the VM. The new full is verified as it is written, keeps the last
point's backup id and chain, and restores that point on its own; the chain's
next incremental applies on top of it. The streams merged are not changed.

  --out FILE     the new full stream (written as FILE.partial, then renamed)
  --compress C   none, zstd or zstd:N (1-19) (default: as the last stream)
  --force        replace an existing FILE
  --json         print a JSON summary on stdout${PROGRESS_HELP}
`;

export const mergeCommand: Command = {
  name: "merge",
  summary: "merge a full and its incrementals into a new full (synthetic full)",
  async run(args) {
    const parsed = parseFlags(
      "merge",
      args,
      {
        out: { type: "string" },
        compress: { type: "string" },
        force: { type: "boolean" },
        json: { type: "boolean" },
        ...PROGRESS_FLAGS,
      },
      MERGE_HELP,
    );
    if (!parsed) return 0;
    const out = required("merge", "out", parsed.values.out);
    if (parsed.positionals.length === 0) {
      throw new UsageError("merge: name the full and its incrementals, in chain order");
    }
    const compression = compressionFlag("merge", parsed.values.compress);
    await requireOutputDir("merge", "out", out);
    const progress = await Progress.start("merge", parsed.values);
    const result = await cancellable((signal) =>
      mergeChain({
        streams: parsed.positionals,
        out,
        compression,
        force: parsed.values.force,
        signal,
        onProgress: (done, total) => progress.update(out, done, total),
      })
    ).catch((err) => {
      progress.fail(err);
      throw err;
    });
    const read = result.trailer.dataBytes;
    const when = timing(progress.startedAt, Date.now(), read);
    progress.info(
      `merged ${result.mergedFrom.length} streams into full ${result.header.backupId} of ${result.header.disk}: ${out} (verified)`,
    );
    progress.finish({
      what: `merge into ${out}`,
      level: "full",
      read,
      stored: result.trailer.storedBytes,
      streamBytes: result.streamBytes,
      seconds: when.seconds,
    });
    if (parsed.values.json) console.log(JSON.stringify({ ...result, ...when }, null, 2));
    return 0;
  },
};

const PRUNE_HELP = `
usage: dirtybit prune DIR [--keep-last N] [--keep-daily N] [--keep-weekly N]
                      [--keep-monthly N] [--dry-run] [--merge] [--json]

Removes the backup streams under DIR that the retention policy does not keep,
per directory and disk, but never a stream that a kept point needs to be
restored (its full and the incrementals before it). A chain with a missing
parent is left alone. Prints every stream kept or removed and why.

  --keep-last N      keep the newest N points
  --keep-daily N     keep the newest point of each of the last N days that have one
  --keep-weekly N    ... of each of the last N ISO weeks (Monday to Sunday, UTC)
  --keep-monthly N   ... of each of the last N calendar months (UTC)
  --merge            first merge the oldest kept point of each chain into a new
                     full (PATH.merged.dbit), so the full and incrementals before
                     it can go too
  --compress C       compression of merged fulls (default: as the chain)
  --dry-run          only print what would be done
  --json             print the plan and what was done as JSON on stdout
`;

const KEEP_FLAGS = ["keep-last", "keep-daily", "keep-weekly", "keep-monthly"] as const;
type KeepFlag = typeof KEEP_FLAGS[number];

const PRUNE_FLAGS = {
  ...flagsOf(KEEP_FLAGS, { type: "string" }),
  "dry-run": { type: "boolean" },
  merge: { type: "boolean" },
  compress: { type: "string" },
  json: { type: "boolean" },
} as const satisfies FlagTable;

export const pruneCommand: Command = {
  name: "prune",
  summary: "remove backup streams a retention policy does not keep (never a needed parent)",
  async run(args) {
    const parsed = parseFlags("prune", args, PRUNE_FLAGS, PRUNE_HELP);
    if (!parsed) return 0;
    const f = parsed.values;
    if (parsed.positionals.length !== 1) throw new UsageError("prune: name exactly one DIR");
    const keep = (name: KeepFlag) => integer("prune", name, f[name], 0, 1e6) ?? 0;
    const policy = {
      last: keep("keep-last"),
      daily: keep("keep-daily"),
      weekly: keep("keep-weekly"),
      monthly: keep("keep-monthly"),
    };
    const dryRun = f["dry-run"] ?? false;
    const result = await cancellable((signal) =>
      prune({
        dir: parsed.positionals[0],
        policy,
        dryRun,
        merge: f.merge ?? false,
        compression: compressionFlag("prune", f.compress),
        signal,
      })
    );
    if (f.json) {
      console.log(JSON.stringify({ dryRun, ...result }, null, 2));
      return 0;
    }
    const would = dryRun ? "would " : "";
    for (const m of result.plan.merges) {
      console.log(`${would}merge  ${m.out}  (point ${m.backupId} from ${m.streams.join(" ")})`);
    }
    for (const d of result.plan.decisions) {
      console.log(`${d.keep ? "keep  " : `${would}remove`}  ${d.path}  ${d.why}`);
    }
    for (const u of result.unreadable) console.log(`skip    ${u.path}: unreadable: ${u.error}`);
    return 0;
  },
};
