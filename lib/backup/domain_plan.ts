/**
 * Planning a backup of a libvirt domain's disks on libvirt's checkpoints:
 * which disks are selected, what level each gets and from which checkpoint,
 * what the new checkpoint covers, and which of dirtybit's checkpoints no
 * chain needs any more. Pure: no I/O.
 *
 * One libvirt checkpoint per accepted backup, named `dirtybit-OWNER-BACKUPID`
 * (OWNER: the state directory's owner id); its bitmap on each disk has the
 * same name and keeps recording (libvirt keeps every checkpoint's bitmap
 * enabled), so an incremental since checkpoint C reads C's bitmap alone. A
 * disk's state keeps, as `incBitmap`, the checkpoint of its last backup and,
 * as `baseBitmap`, that of its last full. A `dirtybit-` checkpoint of another
 * owner on a disk means another state directory's chain runs on it: only
 * `--take-over` removes it.
 *
 * @module
 */
import { UsageError } from "../core/errors.ts";
import type { DomainDisk } from "../hosts/libvirt.ts";
import type { CheckpointInfo } from "../hosts/libvirt_xml.ts";
import type { BackupLevel } from "../core/level.ts";
import type { DiskState } from "../model/disk_state.ts";

/** Prefix of the checkpoints dirtybit creates (and only ever deletes). */
export const CHECKPOINT_PREFIX = "dirtybit-";

/** The checkpoint of a backup id of the state directory whose owner id is `owner`. */
export function checkpointName(owner: string, backupId: string): string {
  return `${CHECKPOINT_PREFIX}${owner}-${backupId}`;
}

/**
 * dirtybit's checkpoints of other owners (other state directories) that have
 * a bitmap on one of `targets`.
 */
export function foreignCheckpoints(
  checkpoints: readonly CheckpointInfo[],
  owner: string,
  targets: readonly string[],
): CheckpointInfo[] {
  const mine = `${CHECKPOINT_PREFIX}${owner}-`;
  return checkpoints.filter((c) =>
    c.name.startsWith(CHECKPOINT_PREFIX) && !c.name.startsWith(mine) &&
    targets.some((t) => c.bitmaps.has(t))
  );
}

/** A disk of the domain that has an image (what `--disk` can name). */
export type ImageDisk = DomainDisk & { source: string };

/**
 * The domain's disks with an image (empty cdroms and floppies have none),
 * narrowed by `only` (targets, or image paths) and `exclude`. An unknown name
 * is a UsageError listing the disks.
 */
export function selectDomainDisks(
  domain: string,
  disks: DomainDisk[],
  only: readonly string[] = [],
  exclude: readonly string[] = [],
): ImageDisk[] {
  const images = disks.filter((d): d is ImageDisk => d.source !== undefined && d.device === "disk");
  const find = (name: string, param: string) => {
    const hit = images.find((d) => d.target === name || d.source === name);
    if (!hit) {
      const all = images.map((d) => `${d.target} (${d.source})`).join(", ") || "none";
      throw new UsageError((p) =>
        `${p(param)} ${name}: domain ${domain} has no such disk; its disks: ${all}`
      );
    }
    return hit;
  };
  const included = only.length ? new Set(only.map((n) => find(n, "disk"))) : new Set(images);
  for (const name of exclude) included.delete(find(name, "exclude_disk"));
  const selected = images.filter((d) => included.has(d));
  if (selected.length === 0) {
    throw new UsageError((p) =>
      `no disk of domain ${domain} is left to back up: check ${p("exclude_disk")}`
    );
  }
  return selected;
}

/** Why a disk cannot carry a checkpoint bitmap, or undefined when it can. */
export function bitmapIncapable(disk: ImageDisk): string | undefined {
  if (disk.type !== "file" && disk.type !== "block") {
    return `${disk.target} is a ${disk.type} disk, which libvirt cannot give a checkpoint bitmap`;
  }
  if (disk.format !== "qcow2") {
    return `${disk.target} is a ${
      disk.format ?? "raw"
    } image: only qcow2 images carry dirty bitmaps`;
  }
  return undefined;
}

/** A selected disk as planned. */
export interface DomainDiskPlan {
  target: string;
  level: BackupLevel;
  /** Why a requested incremental or differential became a full (or a disk is always full). */
  reason?: string;
  /** Checkpoint whose bitmap has the changes to read (incremental, differential). */
  since?: string;
  /** The disk gets a bitmap in the new checkpoint. */
  bitmap: boolean;
}

/** What the planner is told. */
export interface DomainPlanInput {
  disks: ImageDisk[];
  states: (DiskState | null)[];
  /** Virtual size of each disk now. */
  sizes: number[];
  /** libvirt's checkpoints of the domain. */
  checkpoints: CheckpointInfo[];
  requested: BackupLevel;
  /**
   * For a shut-off domain: the bitmaps each disk's image holds now (a
   * checkpoint whose bitmap the image lost cannot serve).
   */
  imageBitmaps?: Set<string>[];
  /** Per disk, why its chain cannot go on whatever the checkpoints say (its parent's stream is gone). */
  broken?: (string | undefined)[];
}

/** Plans every selected disk (see the module doc). */
export function planDomainDisks(input: DomainPlanInput): DomainDiskPlan[] {
  const byName = new Map(input.checkpoints.map((c) => [c.name, c]));
  return input.disks.map((disk, i) => {
    const incapable = bitmapIncapable(disk);
    if (incapable) {
      return {
        target: disk.target,
        level: "full",
        reason: `${incapable}; every backup of it is a full`,
        bitmap: false,
      };
    }
    const full = (reason?: string): DomainDiskPlan => ({
      target: disk.target,
      level: "full",
      ...(reason ? { reason } : {}),
      bitmap: true,
    });
    if (input.requested === "full") return full();
    const state = input.states[i];
    if (!state) return full("no previous backup of this disk in the state directory");
    if (input.broken?.[i]) return full(input.broken[i]);
    if (state.virtualSize !== input.sizes[i]) {
      return full(
        `the disk was resized from ${state.virtualSize} to ${
          input.sizes[i]
        } bytes since backup ${state.lastBackupId}`,
      );
    }
    const since = input.requested === "incremental"
      ? state.checkpoint.incBitmap
      : state.checkpoint.baseBitmap;
    const cp = byName.get(since);
    if (!cp) {
      return full(
        `libvirt has no checkpoint ${since} (deleted, or the domain was redefined without its checkpoints)`,
      );
    }
    if (!cp.bitmaps.has(disk.target)) {
      return full(`checkpoint ${since} has no bitmap for ${disk.target}`);
    }
    const images = input.imageBitmaps?.[i];
    if (images && !images.has(cp.bitmaps.get(disk.target)!)) {
      return full(`image ${disk.source} lost the bitmap of checkpoint ${since}`);
    }
    return { target: disk.target, level: input.requested, since, bitmap: true };
  });
}

/**
 * The checkpoints of owner `owner` that no chain in its state directory
 * builds on: every `dirtybit-OWNER-*` checkpoint not named by a backup in some
 * disk's history (the current chain of each disk, from its full on).
 * `keepAlso` is the new checkpoint while its backup is not yet recorded.
 */
export function staleCheckpoints(
  checkpoints: readonly string[],
  owner: string,
  states: readonly DiskState[],
  keepAlso: readonly string[] = [],
): string[] {
  const keep = new Set(keepAlso);
  for (const s of states) {
    keep.add(s.checkpoint.incBitmap).add(s.checkpoint.baseBitmap);
    for (const h of s.history) keep.add(checkpointName(owner, h.backupId));
  }
  const mine = `${CHECKPOINT_PREFIX}${owner}-`;
  return checkpoints.filter((c) => c.startsWith(mine) && !keep.has(c));
}
