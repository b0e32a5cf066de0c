/**
 * Backup streams found on disk, grouped into chains, and the streams each
 * restorable point needs. Pure logic: the catalog (catalog.ts) reads the
 * headers, this decides what they mean.
 *
 * A point is a backup id. Usually one stream holds it; after `dirtybit merge`
 * a synthetic full holds the same point as the incremental it was merged up
 * to, so a point may be reachable through several streams, and the shortest
 * restore is chosen.
 *
 * @module
 */
import type { StreamHeader } from "../stream/format.ts";

/** One stream file and its header. */
export interface CatalogEntry {
  readonly path: string;
  readonly header: StreamHeader;
  /** File size in bytes. */
  readonly size: number;
}

/** A point of a chain and the streams that restore it, in apply order (null: a parent is missing). */
export interface ChainPoint {
  readonly backupId: string;
  readonly level: StreamHeader["level"];
  readonly createdAt: string;
  readonly restore: readonly CatalogEntry[] | null;
}

/** The streams of one chain (a full and everything based on it) of one disk in one directory. */
export interface Chain {
  /** Directory and disk: the retention unit (one directory per VM is the usual layout). */
  readonly series: string;
  readonly dir: string;
  readonly disk: string;
  readonly chainId: string;
  /** Every stream, oldest first. */
  readonly entries: readonly CatalogEntry[];
  /** Every distinct point, oldest first. */
  readonly points: readonly ChainPoint[];
  /** Some point cannot be restored: a stream's parent is not among the streams found. */
  readonly broken: boolean;
  /** Backup ids that streams name as parent but that no stream holds. */
  readonly missing: readonly string[];
}

/** A stream's directory (everything before the last '/'). */
export function dirOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? "." : i === 0 ? "/" : path.slice(0, i);
}

function byTime(a: CatalogEntry, b: CatalogEntry): number {
  return Date.parse(a.header.createdAt) - Date.parse(b.header.createdAt) ||
    (a.header.level === "full" ? -1 : 0) - (b.header.level === "full" ? -1 : 0) ||
    a.path.localeCompare(b.path);
}

/**
 * The shortest list of streams (full first) that restores point `id` from
 * `entries` of one chain, or null when some parent on every way is missing.
 */
export function restorePath(
  entries: readonly CatalogEntry[],
  id: string,
): CatalogEntry[] | null {
  const memo = new Map<string, CatalogEntry[] | null>();
  const resolve = (point: string, seen: Set<string>): CatalogEntry[] | null => {
    if (memo.has(point)) return memo.get(point)!;
    if (seen.has(point)) return null; // a cycle of parent ids: not a chain
    seen.add(point);
    let best: CatalogEntry[] | null = null;
    for (const e of entries) {
      if (e.header.backupId !== point) continue;
      const path = e.header.parentId === null ? [e] : (() => {
        const before = resolve(e.header.parentId, seen);
        return before && [...before, e];
      })();
      if (path && (!best || path.length < best.length)) best = path;
    }
    memo.set(point, best);
    return best;
  };
  return resolve(id, new Set());
}

/** Groups streams into chains per directory and disk, oldest first. */
export function groupChains(entries: readonly CatalogEntry[]): Chain[] {
  const groups = new Map<string, CatalogEntry[]>();
  for (const e of entries) {
    const key = JSON.stringify([dirOf(e.path), e.header.disk, e.header.chainId]);
    const list = groups.get(key) ?? [];
    list.push(e);
    groups.set(key, list);
  }
  const chains: Chain[] = [];
  for (const [key, list] of groups) {
    const [dir, disk, chainId] = JSON.parse(key) as string[];
    list.sort(byTime);
    const ids = new Set(list.map((e) => e.header.backupId));
    const missing = [
      ...new Set(
        list.map((e) => e.header.parentId).filter((p): p is string => p !== null && !ids.has(p)),
      ),
    ];
    const points: ChainPoint[] = [];
    for (const e of list) {
      if (points.some((p) => p.backupId === e.header.backupId)) continue;
      points.push({
        backupId: e.header.backupId,
        level: e.header.level,
        createdAt: e.header.createdAt,
        restore: restorePath(list, e.header.backupId),
      });
    }
    chains.push({
      series: JSON.stringify([dir, disk]),
      dir,
      disk,
      chainId,
      entries: list,
      points,
      broken: points.some((p) => p.restore === null),
      missing,
    });
  }
  return chains.sort((a, b) =>
    a.dir.localeCompare(b.dir) || a.disk.localeCompare(b.disk) ||
    byTime(a.entries[0], b.entries[0])
  );
}

/**
 * The header fields of the synthetic full of the point `last` (see merge.ts):
 * the same point, backup id, chain and time, as a full.
 */
export function syntheticFull(last: StreamHeader): StreamHeader {
  return { ...last, level: "full", parentId: null };
}
