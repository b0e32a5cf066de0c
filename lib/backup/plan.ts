/**
 * The planning of a backup job, without I/O: per disk its level and parent,
 * why a requested incremental or differential became a full, and the state
 * the disk has once the backup is accepted. The engine feeds it what QEMU
 * and the state directory said; disk backup consumes the plan.
 *
 * @module
 */
import type { BackupLevel, RequestedLevel } from "../core/level.ts";
import type { CbtStats } from "../cbt/layers.ts";
import type { BackupRecord, DiskState } from "../model/disk_state.ts";

/** A disk as planned: what level it gets and why. */
export interface PlannedDisk {
  node: string;
  diskName: string;
  level: BackupLevel;
  /** Why a requested incremental/differential (or auto) became a full. */
  fallback?: string;
  backupId: string;
  parentId: string | null;
}

/** A disk as backed up. */
export interface DiskBackupResult extends PlannedDisk {
  stats: CbtStats;
  /** Bytes of the stream written to the sink. */
  streamBytes: number;
}

/** The backup a disk's next stream builds on at `level`, or null for a full or a first backup. */
export function parentOf(level: BackupLevel, state: DiskState | null): string | null {
  if (level === "full" || !state) return null;
  return level === "differential" ? state.lastFullId : state.lastBackupId;
}

/**
 * Why a disk's chain cannot go on whatever its bitmaps say, as far as the
 * state tells: its size changed since the last backup (an incremental of
 * another size cannot apply on its parent). Otherwise the parent record
 * whose stream the caller still has to check, if any.
 */
export function chainBreak(
  requested: RequestedLevel,
  state: DiskState | null,
  size: number | undefined,
): { reason: string } | { parent?: BackupRecord } {
  if (!state) return {};
  if (size !== undefined && size !== state.virtualSize) {
    return {
      reason:
        `the disk was resized from ${state.virtualSize} to ${size} bytes since backup ${state.lastBackupId}`,
    };
  }
  const parentId = parentOf(requested === "differential" ? "differential" : "incremental", state);
  return { parent: state.history.find((r) => r.backupId === parentId) };
}

/** What the point in time made of one disk: its level, and why a full if it turned one. */
export interface PointInTimeDisk {
  node: string;
  level: BackupLevel;
  reason?: string;
}

/** One disk's plan from the level its point in time got and its state. */
export function planDiskBackup(
  requested: RequestedLevel,
  disk: PointInTimeDisk,
  diskName: string,
  state: DiskState | null,
  backupId: string,
): PlannedDisk {
  const fallback = disk.reason ??
    (disk.level === "full" && requested !== "full" && !state
      ? "no previous backup of this disk in the state directory"
      : undefined);
  return {
    node: disk.node,
    diskName,
    level: disk.level,
    ...(fallback ? { fallback } : {}),
    backupId,
    parentId: parentOf(disk.level, state),
  };
}

/** What a written stream adds to its disk's state. */
export interface WrittenDisk {
  result: DiskBackupResult;
  virtualSize: number;
  blockSize: number;
}

/**
 * The disk's state once its backup is accepted: a full starts a new chain
 * and history, anything else extends the previous one.
 */
export function nextState(
  prev: DiskState | null,
  written: WrittenDisk,
  checkpoint: DiskState["checkpoint"],
  stream: string | undefined,
  now = new Date(),
): DiskState {
  const r = written.result;
  const full = r.level === "full";
  return {
    diskName: r.diskName,
    chainId: full ? r.backupId : prev!.chainId,
    virtualSize: written.virtualSize,
    blockSize: written.blockSize,
    lastBackupId: r.backupId,
    lastFullId: full ? r.backupId : prev!.lastFullId,
    checkpoint,
    history: [...(full ? [] : prev?.history ?? []), {
      backupId: r.backupId,
      parentId: r.parentId,
      level: r.level,
      time: now.toISOString(),
      ...(stream ? { stream } : {}),
    }],
  };
}
