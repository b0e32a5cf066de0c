/**
 * Checkpoints: the persistent dirty bitmaps that remember what the guest wrote
 * since the last accepted backup, and the pure planning that decides, per
 * disk, what a new point in time exports and which bitmaps it adds, keeps and
 * drops. No I/O here; {@link ./pointintime.ts} carries the plan out.
 *
 * Bitmap names are `dirtybit-[SCOPE-](inc|base|tmp)-CHECKPOINTID`. A scope
 * (e.g. `repl`) keeps the bitmaps of independent users of one disk (backup,
 * replication) apart: each only ever removes bitmaps of its own scope.
 *
 * @module
 */
import { SourceError, UsageError } from "../core/errors.ts";
import type { BitmapInfo, BlockNodeInfo } from "./blocknodes.ts";

/** What the caller persists per disk after an accepted backup. */
export interface DiskCheckpoint {
  /** QEMU block node (format node) of the disk. */
  node: string;
  /** Persistent bitmap recording changes since the last accepted backup. */
  incBitmap: string;
  /** Persistent bitmap recording changes since the last accepted full backup. */
  baseBitmap: string;
}

/** Backup level. */
export type Level = "full" | "incremental" | "differential";

/** The bitmap names one checkpoint id gives. */
export interface BitmapNames {
  /** New persistent bitmap: changes since this point (next incremental). */
  inc: string;
  /** New persistent bitmap: changes since this point, if it is a full (next differential). */
  base: string;
  /** Temporary frozen copy that the point-in-time view exports. */
  tmp: string;
}

const CHECKPOINT_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
// At most 8 characters: temporary node names carry the scope and QEMU allows 31.
const SCOPE = /^[a-z0-9]{1,8}$/;
const KINDS = ["inc", "base", "tmp"];

/** Bitmap names for a checkpoint id; UsageError on an id or scope QEMU or we cannot use. */
export function bitmapNames(checkpointId: string, scope?: string): BitmapNames {
  if (!CHECKPOINT_ID.test(checkpointId)) {
    throw new UsageError(
      `checkpoint id "${checkpointId}" is invalid: use 1-64 letters, digits, '.', '_' or '-'`,
    );
  }
  const prefix = scopePrefix(scope);
  return {
    inc: `${prefix}inc-${checkpointId}`,
    base: `${prefix}base-${checkpointId}`,
    tmp: `${prefix}tmp-${checkpointId}`,
  };
}

/** True for the bitmaps dirtybit owns in `scope` (no scope: the unscoped ones). */
export function isScopedBitmap(name: string, scope?: string): boolean {
  const prefix = scopePrefix(scope);
  return KINDS.some((kind) => name.startsWith(`${prefix}${kind}-`));
}

/**
 * A fresh prefix for the ids of one attempt's temporary nodes, jobs and
 * exports: `dirtybit-[SCOPE-]XXXXXXXX-` with 8 random hex digits.
 */
export function newTempPrefix(scope?: string): string {
  const bytes = crypto.getRandomValues(new Uint8Array(4));
  return `${scopePrefix(scope)}${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}-`;
}

/** True for the id of a temporary node, job or export made under `scope` (see newTempPrefix). */
export function isScopedTempId(id: string, scope?: string): boolean {
  const prefix = scopePrefix(scope);
  return id.startsWith(prefix) && /^[0-9a-f]{8}-[a-z][0-9]+$/.test(id.slice(prefix.length));
}

/** `dirtybit-` or `dirtybit-SCOPE-`; UsageError on a scope we cannot use. */
export function scopePrefix(scope: string | undefined): string {
  if (scope === undefined) return "dirtybit-";
  if (!SCOPE.test(scope) || KINDS.includes(scope)) {
    throw new UsageError(
      `bitmap scope "${scope}" is invalid: use 1-8 lower-case letters or digits, not inc/base/tmp`,
    );
  }
  return `dirtybit-${scope}-`;
}

/** Why a checkpoint bitmap cannot serve as the base of a backup, or undefined if it can. */
export function bitmapProblem(node: BlockNodeInfo, name: string): string | undefined {
  const bitmap = node.bitmaps.find((b) => b.name === name);
  if (!bitmap) {
    return `bitmap ${name} does not exist on node ${node.name} ` +
      `(QEMU restarted without it, the host crashed, or it was removed)`;
  }
  if (bitmap.inconsistent) {
    return `bitmap ${name} is inconsistent (QEMU was not shut down cleanly)`;
  }
  if (bitmap.busy) return `bitmap ${name} is in use by another job`;
  if (!bitmap.persistent) return `bitmap ${name} is not persistent`;
  if (!bitmap.recording) return `bitmap ${name} is disabled (not recording)`;
  return undefined;
}

/** What a point in time does with one disk's bitmaps. */
export interface DiskPlan {
  node: string;
  size: number;
  level: Level;
  /** Why a requested incremental or differential became full. */
  reason?: string;
  /** Bitmap copied into `names.tmp` and exported (incremental, differential). */
  source?: BitmapInfo;
  names: BitmapNames;
  /** Bitmaps this attempt adds and persists: `names.inc`, plus `names.base` for a full. */
  added: string[];
  /** Stale or unusable bitmaps of this scope, removed before the point in time. */
  removeNow: string[];
  /** Bitmaps the old checkpoint needed, removed once the backup is accepted. */
  removeOnCommit: string[];
  /** The checkpoint to persist once the backup is accepted. */
  next: DiskCheckpoint;
}

/**
 * Plans one disk: the effective level (full with a reason when the needed
 * bitmap is unusable) and the bitmaps to add, export and remove.
 * SourceError if a bitmap of this scope is busy: another job is running.
 */
export function planDisk(
  node: BlockNodeInfo,
  checkpoint: DiskCheckpoint | undefined,
  requested: Level,
  names: BitmapNames,
  scope?: string,
): DiskPlan {
  const owned = node.bitmaps.filter((b) => isScopedBitmap(b.name, scope));
  const busy = owned.find((b) => b.busy);
  if (busy) {
    throw new SourceError(
      `bitmap ${busy.name} on node ${node.name} is busy: another dirtybit job is running on ` +
        `this disk, or a dead one left it (then remove its leftovers)`,
    );
  }
  const reused = checkpoint &&
    [checkpoint.incBitmap, checkpoint.baseBitmap].find((n) => n === names.inc || n === names.base);
  if (reused) {
    throw new UsageError(
      `bitmap ${reused} already belongs to the current checkpoint: use a new id`,
    );
  }

  let level = requested;
  let reason: string | undefined;
  let sourceName: string | undefined;
  if (requested !== "full") {
    if (!checkpoint) {
      reason = `no previous checkpoint for node ${node.name}`;
    } else if (checkpoint.node !== node.name) {
      reason = `the checkpoint belongs to node ${checkpoint.node}, not ${node.name}`;
    } else {
      sourceName = requested === "incremental" ? checkpoint.incBitmap : checkpoint.baseBitmap;
      reason = bitmapProblem(node, sourceName);
    }
    if (reason) {
      level = "full";
      sourceName = undefined;
    }
  }

  // Old checkpoint bitmaps that still record stay until the backup is accepted,
  // so an aborted attempt leaves the old checkpoint whole; everything else of
  // this scope (unusable, or left by an attempt that crashed) goes now.
  const oldNames = checkpoint?.node === node.name
    ? [checkpoint.incBitmap, checkpoint.baseBitmap]
    : [];
  const keep = new Set(
    owned.filter((b) => oldNames.includes(b.name) && bitmapProblem(node, b.name) === undefined)
      .map((b) => b.name),
  );
  const removeNow = owned.filter((b) => !keep.has(b.name)).map((b) => b.name);

  const full = level === "full";
  const base = full ? names.base : checkpoint!.baseBitmap;
  const removeOnCommit = [...keep].filter((n) => full || n !== base);
  return {
    node: node.name,
    size: node.size,
    level,
    reason,
    source: sourceName ? node.bitmaps.find((b) => b.name === sourceName) : undefined,
    names,
    added: full ? [names.inc, names.base] : [names.inc],
    removeNow,
    removeOnCommit,
    next: { node: node.name, incBitmap: names.inc, baseBitmap: base },
  };
}
