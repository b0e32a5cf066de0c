/**
 * Checkpoints: the persistent dirty bitmaps that remember what the guest wrote
 * since the last accepted backup, and the pure planning that decides, per
 * disk, what a new point in time exports and which bitmaps it adds, keeps and
 * drops. No I/O here; {@link ./pointintime.ts} carries the plan out.
 *
 * Bitmap names are `dirtybit-[SCOPE-](inc|base|tmp)-CHECKPOINTID[@OWNER]`. A
 * scope (e.g. `repl`) keeps the bitmaps of independent users of one disk
 * (backup, replication) apart: each only ever removes bitmaps of its own
 * scope. Within a scope the disk, not a state directory, is the unit of
 * ownership: the owner id (one per state directory) says whose chain a bitmap
 * belongs to, and a run that finds another owner's bitmaps refuses unless told
 * to take the disk over.
 *
 * @module
 */
import { ChainError, SourceError, UsageError, type Wording } from "../core/errors.ts";
import type { BitmapInfo, BlockNodeInfo } from "./blocknodes.ts";
import type { BackupLevel } from "../core/level.ts";

/** What the caller persists per disk after an accepted backup. */
export interface DiskCheckpoint {
  /** QEMU block node (format node) of the disk. */
  node: string;
  /** Persistent bitmap recording changes since the last accepted backup. */
  incBitmap: string;
  /** Persistent bitmap recording changes since the last accepted full backup. */
  baseBitmap: string;
}

/** The bitmap names one checkpoint id gives. */
export interface BitmapNames {
  /** New persistent bitmap: changes since this point (next incremental). */
  inc: string;
  /** New persistent bitmap: changes since this point, if it is a full (next differential). */
  base: string;
  /** Temporary frozen copy that the point-in-time view exports. */
  tmp: string;
  /** Owner id the names carry; undefined: unowned names (every bitmap of the scope is ours). */
  owner?: string;
}

const CHECKPOINT_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
// At most 8 characters: temporary node names carry the scope and QEMU allows 31.
const SCOPE = /^[a-z0-9]{1,8}$/;
const KINDS = ["inc", "base", "tmp"];
const OWNER = /^[0-9a-f]{8,32}$/;

/**
 * Bitmap names for a checkpoint id, carrying `owner` if given; UsageError on
 * an id, scope or owner QEMU or we cannot use.
 */
export function bitmapNames(checkpointId: string, scope?: string, owner?: string): BitmapNames {
  if (!CHECKPOINT_ID.test(checkpointId)) {
    throw new UsageError(
      `checkpoint id "${checkpointId}" is invalid: use 1-64 letters, digits, '.', '_' or '-'`,
    );
  }
  if (owner !== undefined && !OWNER.test(owner)) {
    throw new UsageError(`owner id "${owner}" is invalid: use 8-32 lower-case hex digits`);
  }
  const prefix = scopePrefix(scope);
  const suffix = owner === undefined ? "" : `@${owner}`;
  return {
    inc: `${prefix}inc-${checkpointId}${suffix}`,
    base: `${prefix}base-${checkpointId}${suffix}`,
    tmp: `${prefix}tmp-${checkpointId}${suffix}`,
    ...(owner === undefined ? {} : { owner }),
  };
}

/** The owner id a bitmap name carries (`...@OWNER`), or undefined (made before owner ids). */
export function bitmapOwner(name: string): string | undefined {
  const at = name.lastIndexOf("@");
  return at < 0 ? undefined : name.slice(at + 1);
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

/**
 * Why a checkpoint bitmap cannot serve as the base of a backup, or undefined
 * if it can. For a missing one, what the other bitmaps of `scope` tell: none
 * left means QEMU lost them all (a restart that did not keep them); others
 * left means this one was removed.
 */
export function bitmapProblem(
  node: BlockNodeInfo,
  name: string,
  scope?: string,
): string | undefined {
  const bitmap = node.bitmaps.find((b) => b.name === name);
  if (!bitmap) {
    const others = node.bitmaps.some((b) => isScopedBitmap(b.name, scope));
    return `bitmap ${name} does not exist on node ${node.name}: ` +
      (others
        ? "it was removed (other dirtybit bitmaps are still there)"
        : "no dirtybit bitmap is left, so QEMU was restarted without them " +
          "(a host crash, the disk reopened, or an image that cannot store bitmaps)");
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
  level: BackupLevel;
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

/** Options of {@link foreignBitmaps}. */
export interface OwnershipOptions {
  /** Bitmap scope (default none). */
  scope?: string;
  /** Remove the bitmaps of other owners and take a full, instead of refusing. */
  takeOver?: boolean;
  /**
   * Bitmaps the caller's state names besides the checkpoint: its own even
   * without an owner id (made before owner ids).
   */
  adopt?: readonly string[];
  /** How to take the disk over, in the refusal (default: a backup's take_over and a new chain). */
  takeOverHint?: Wording;
}

/** Options of {@link planDisk}. */
export interface PlanOptions extends OwnershipOptions {
  /** Why the disk must get a full whatever its bitmaps say (e.g. it was resized). */
  fullBecause?: string;
}

const TAKE_OVER_HINT: Wording = (p) =>
  `pass ${p("take_over")} to remove its bitmaps and start a new chain here with a full backup`;

/**
 * The bitmaps of `scope` on `node` that belong to another chain than
 * `owner`'s: they carry another owner id, or none and neither `checkpoint`
 * (if it is this node's) nor `adopt` names them. No `owner`: none (unowned
 * names, every bitmap of the scope is ours). ChainError naming their owners
 * unless `takeOver`.
 */
export function foreignBitmaps(
  node: BlockNodeInfo,
  checkpoint: DiskCheckpoint | undefined,
  owner: string | undefined,
  { scope, takeOver = false, adopt = [], takeOverHint = TAKE_OVER_HINT }: OwnershipOptions = {},
): BitmapInfo[] {
  if (owner === undefined) return [];
  const oldNames = checkpoint?.node === node.name
    ? [checkpoint.incBitmap, checkpoint.baseBitmap]
    : [];
  const ours = new Set([...oldNames, ...adopt]);
  const foreign = node.bitmaps.filter((b) =>
    isScopedBitmap(b.name, scope) && bitmapOwner(b.name) !== owner && !ours.has(b.name)
  );
  if (foreign.length > 0 && !takeOver) {
    const owners = ownersOf(foreign);
    const held = oldNames.length > 0
      ? `the checkpoint of node ${node.name} was taken over by the chain of owner ${owners} ` +
        `(another state directory)`
      : `node ${node.name} belongs to the chain of owner ${owners} (another state directory)`;
    throw new ChainError((p) => `${held}: ${takeOverHint(p)}`);
  }
  return foreign;
}

function ownersOf(bitmaps: BitmapInfo[]): string {
  return [
    ...new Set(
      bitmaps.map((b) => bitmapOwner(b.name) ?? "unknown (bitmaps made before owner ids)"),
    ),
  ].join(", ");
}

/**
 * Plans one disk: the effective level (full with a reason when the needed
 * bitmap is unusable) and the bitmaps to add, export and remove.
 * SourceError if a bitmap of this scope is busy: another job is running.
 * ChainError if the disk holds bitmaps of another owner than `names.owner`
 * (another state directory's chain) and `takeOver` is not set
 * (see {@link foreignBitmaps}).
 */
export function planDisk(
  node: BlockNodeInfo,
  checkpoint: DiskCheckpoint | undefined,
  requested: BackupLevel,
  names: BitmapNames,
  options: PlanOptions = {},
): DiskPlan {
  const { scope, fullBecause } = options;
  const scoped = node.bitmaps.filter((b) => isScopedBitmap(b.name, scope));
  const busy = scoped.find((b) => b.busy);
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

  const oldNames = checkpoint?.node === node.name
    ? [checkpoint.incBitmap, checkpoint.baseBitmap]
    : [];
  const foreign = foreignBitmaps(node, checkpoint, names.owner, options);
  const owners = ownersOf(foreign);
  const owned = scoped.filter((b) => !foreign.includes(b));

  let level = requested;
  let reason: string | undefined;
  let sourceName: string | undefined;
  if (requested !== "full") {
    if (foreign.length > 0) {
      reason = `taking node ${node.name} over from the chain of owner ${owners}`;
    } else if (fullBecause) {
      reason = fullBecause;
    } else if (!checkpoint) {
      reason = `no previous checkpoint for node ${node.name}`;
    } else if (checkpoint.node !== node.name) {
      reason = `the checkpoint belongs to node ${checkpoint.node}, not ${node.name}`;
    } else {
      sourceName = requested === "incremental" ? checkpoint.incBitmap : checkpoint.baseBitmap;
      reason = bitmapProblem(node, sourceName, scope);
    }
    if (reason) {
      level = "full";
      sourceName = undefined;
    }
  }

  // Old checkpoint bitmaps that still record stay until the backup is accepted,
  // so an aborted attempt leaves the old checkpoint whole; everything else of
  // this scope (unusable, left by an attempt that crashed, or another owner's
  // on a take-over) goes now.
  const keep = new Set(
    owned.filter((b) => oldNames.includes(b.name) && bitmapProblem(node, b.name) === undefined)
      .map((b) => b.name),
  );
  const removeNow = scoped.filter((b) => !keep.has(b.name)).map((b) => b.name);

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
