/**
 * The backup engine: one point in time for all disks of a job, each disk read
 * through NBD (dirty extents for an incremental, allocated extents for a full),
 * filtered by the change-detection layers and written as a dirtybit stream.
 * The checkpoint bitmaps, hash DB and state are committed only after every
 * disk's stream has been written completely and its sink committed
 * (lib/sinks); anything else aborts the point in time, which merges the
 * changes back so the next incremental has them, and discards the sinks.
 *
 * @module
 */
import { join } from "node:path";
import { tmpdir } from "node:os";
import { QmpSocket, type QmpTransport } from "../qemu/qmp.ts";
import { openPointInTime, type PointInTime, type PointInTimeRequest } from "../qemu/pointintime.ts";
import { removeLeftovers } from "../qemu/leftovers.ts";
import { bitmapNames, planDisk } from "../qemu/checkpoint.ts";
import type { BackupLevel, RequestedLevel } from "../core/level.ts";
import { describeHolder, type DiskLock, lockDisks } from "../qemu/disk_lock.ts";
import { missingNode, queryBlockNodes } from "../qemu/blocknodes.ts";
import { CancelledError, describeError, UsageError } from "../core/errors.ts";
import { untilAborted } from "../core/async.ts";
import type { Compression } from "../stream/compression.ts";
import type { OnMessage } from "../core/log.ts";
import {
  type BackupRecord,
  type DiskState,
  loadDiskState,
  newBackupId,
  ownerId,
  saveDiskState,
} from "../model/disk_state.ts";
import { backupDisk, type DiskBackupOutcome, type ReadParallelism } from "./disk_backup.ts";
import {
  chainBreak,
  type DiskBackupResult,
  nextState,
  planDiskBackup,
  type PlannedDisk,
} from "./plan.ts";
import { lockStateDir } from "../model/state_lock.ts";
import { RunRecord } from "../core/run_record.ts";
import { makeDirectory } from "../core/files.ts";
import { JobSinks, type StreamSink } from "../sinks/sink.ts";

/**
 * One disk of a job: the block node QEMU reads it through now, and the name
 * that identifies it across backups (stream header `disk`, state dir key).
 * They differ where node names are not stable: libvirt renumbers its
 * `libvirt-N-format` nodes on every VM start, so a CloudStack disk is named
 * by its volume id.
 */
export interface JobDisk {
  node: string;
  name: string;
}

/** A backup job of one VM's disks on a running QEMU. */
export interface BackupJob {
  /** QMP socket path, or an open transport (e.g. through libvirt on a remote host). */
  qmp: string | QmpTransport;
  /** Block nodes of the disks, each named by its node (shorthand for `disks`). */
  nodes?: string[];
  /** The disks with stable names; give this or `nodes`. */
  disks?: JobDisk[];
  level: RequestedLevel;
  stateDir: string;
  /**
   * Take the disks over from the chains of other state directories (remove
   * their bitmaps, back up full) instead of refusing with a ChainError.
   */
  takeOver?: boolean;
  /** The stream file a disk's stream goes to, if a file: recorded in the disk's history. */
  streamPath?: (disk: PlannedDisk) => string | undefined;
  /**
   * Why the stream of a disk's parent backup cannot be used (e.g. no longer in
   * the output directory), or undefined if it can: a disk with a reason gets a
   * full instead of an incremental or differential on that parent.
   */
  checkParent?: (parent: BackupRecord) => Promise<string | undefined>;
  /** What the streams are compressed with (parsed by the front end). */
  compression: Compression;
  /** Stored in every stream header (e.g. the VM definition for cross-restore). */
  metadata?: Record<string, unknown>;
  /** Unix socket of an NBD server the QEMU already runs (else one is started for the job). */
  nbdSocket?: string;
  /**
   * Directory QEMU can write for the fleece overlays (and the NBD socket it
   * starts); default a private temp dir here, for a QEMU on this machine.
   */
  workDir?: string;
  /** Removes an overlay file QEMU created in `workDir` (default `Deno.remove`). */
  removeFile?: (path: string) => Promise<void>;
  /** Maps an export URI of the point in time to one this process can reach (SSH tunnels). */
  reachExport?: (uri: string) => Promise<string>;
  /** How each disk is read (default LOCAL_READS); a tunnel wants more in flight. */
  reads?: ReadParallelism;
  /**
   * Last check before the checkpoint is committed, once every stream is
   * written (e.g. that the tunnel the reads went through is still up);
   * throwing fails the job as if a read had failed.
   */
  beforeCommit?: () => Promise<void>;
  /** Freeze/thaw of guest file systems around the point in time. */
  quiesce?: { freeze(): Promise<void>; thaw(): Promise<void> };
  signal?: AbortSignal;
  onMessage?: OnMessage;
  /** Bytes of a disk read so far out of the bytes it has to read (after every chunk). */
  onProgress?: (diskName: string, done: number, total: number) => void;
}

/**
 * The settings of a job whose source finds the disks and the QEMU itself (a
 * CloudStack VM, a libvirt domain): what the caller decides, not the source.
 */
export type SourceJobSettings = Pick<
  BackupJob,
  | "level"
  | "stateDir"
  | "takeOver"
  | "checkParent"
  | "compression"
  | "metadata"
  | "streamPath"
  | "signal"
  | "onMessage"
  | "onProgress"
>;

/**
 * Where each disk's stream goes; called once the disk's level is known. A
 * file it creates until the backup is accepted (a `.partial` stream) goes
 * into `run` first, so that the next run removes it if this one is killed.
 * The engine commits every sink before the checkpoint, or discards them all.
 */
export type SinkFactory = (disk: PlannedDisk, run: RunRecord) => Promise<StreamSink>;

/** The job's disks, from `disks` or from `nodes` (name = node). */
export function jobDisks(job: Pick<BackupJob, "nodes" | "disks">): JobDisk[] {
  if (job.disks && job.nodes) throw new UsageError("a backup job takes disks or nodes, not both");
  const disks = job.disks ?? (job.nodes ?? []).map((node) => ({ node, name: node }));
  if (disks.length === 0) throw new UsageError("a backup job needs at least one disk");
  const names = new Set<string>();
  for (const d of disks) {
    if (names.has(d.name)) throw new UsageError(`disk ${d.name} is listed twice`);
    names.add(d.name);
  }
  return disks;
}

/** Runs a backup job; resolves only when every disk was written and the checkpoint committed. */
export function runBackup(job: BackupJob, sinkFor: SinkFactory): Promise<DiskBackupResult[]> {
  const disks = jobDisks(job);
  let qmp: QmpTransport | undefined;
  let diskLock: DiskLock | undefined;
  return runPointInTimeJob(job, disks, {
    async open({ states, backupId, run, localDir }) {
      qmp = typeof job.qmp === "string" ? await QmpSocket.connect(job.qmp) : job.qmp;
      diskLock = await lockDisks(qmp, disks.map((d) => d.node));
      for (const dead of diskLock.removedStale) {
        job.onMessage?.("warning", `removed the disk lock of ${describeHolder(dead)}, which died`);
      }
      // Cleaning up dead runs reaches the whole QEMU: not while a job runs on another disk.
      if (!diskLock.othersRunning) {
        const left = await removeLeftovers(qmp, { removeFile: job.removeFile });
        const leftCount = Object.values(left).reduce((n, list) => n + list.length, 0);
        if (leftCount > 0) {
          job.onMessage?.(
            "warning",
            `removed ${leftCount} leftovers of an earlier backup that did not end`,
          );
        }
      }
      const owner = await ownerId(job.stateDir);
      const broken = job.level === "full" ? [] : await brokenChains(job, qmp, disks, states);
      return await openPointInTimeQuiesced(
        job,
        qmp,
        disks.map((d, i) => ({
          node: d.node,
          checkpoint: states[i]?.checkpoint,
          fullBecause: broken[i],
        })),
        { checkpointId: backupId, owner },
        job.workDir ?? join(localDir, "fleece"),
        run,
      );
    },
    async close() {
      await diskLock?.release();
      if (typeof job.qmp === "string") await qmp?.close().catch(() => {});
    },
  }, sinkFor);
}

/** The settings of a job that do not depend on what takes its point in time. */
export type JobSettings = Pick<
  BackupJob,
  | "level"
  | "stateDir"
  | "compression"
  | "metadata"
  | "reachExport"
  | "reads"
  | "beforeCommit"
  | "signal"
  | "onMessage"
  | "onProgress"
  | "streamPath"
>;

/** What a point-in-time opener is given: the disks' states and this run's ids and record. */
export interface OpenRequest {
  states: (DiskState | null)[];
  backupId: string;
  run: RunRecord;
  /** A private local directory of this run, removed at its end. */
  localDir: string;
}

/**
 * Takes the point in time of a job's disks (QMP transaction, libvirt backup
 * job, an image of a shut-off VM): the engine around it is the same.
 */
export interface PointInTimeOpener {
  open(req: OpenRequest): Promise<PointInTime>;
  /** Called once the job ended, whatever became of it. */
  close?(): Promise<void>;
}

/**
 * The engine around a point in time: lock and run record, per-disk reads into
 * streams, then the commit and the disks' new state; an abort on any failure.
 */
export async function runPointInTimeJob(
  job: JobSettings,
  disks: JobDisk[],
  opener: PointInTimeOpener,
  sinkFor: SinkFactory,
): Promise<DiskBackupResult[]> {
  const backupId = newBackupId();
  await makeDirectory(job.stateDir, "the state directory", { mode: 0o700 });
  const lock = await lockStateDir(job.stateDir);
  let run: RunRecord | undefined;
  const localDir = join(tmpdir(), `dirtybit-job-${crypto.randomUUID().slice(0, 8)}`);
  const sinks = new JobSinks();
  try {
    run = await RunRecord.begin(job.stateDir);
    await run.add({ kind: "path", path: localDir });
    await Deno.mkdir(localDir, { mode: 0o700 });
    const states = await Promise.all(disks.map((d) => loadDiskState(job.stateDir, d.name)));
    const pit = await opener.open({ states, backupId, run, localDir });
    let outcomes: DiskBackupOutcome[];
    try {
      throwIfCancelled(job.signal);
      outcomes = await untilAborted(
        job.signal,
        Promise.all(pit.disks.map(async (disk, i) => {
          const state = states[i];
          const planned = planDiskBackup(job.level, disk, disks[i].name, state, backupId);
          if (planned.fallback) {
            job.onMessage?.("warning", `${planned.diskName}: full backup: ${planned.fallback}`);
          }
          const uri = job.reachExport ? await job.reachExport(disk.uri) : disk.uri;
          return await backupDisk({
            planned,
            uri,
            dirtyContext: disk.dirtyContext,
            granularity: disk.granularity,
            state,
            stateDir: job.stateDir,
            compression: job.compression,
            metadata: job.metadata,
            sink: (await sinks.add(sinkFor(planned, run!))).writable,
            reads: job.reads,
            signal: job.signal,
            onMessage: job.onMessage,
            onProgress: job.onProgress,
          });
        })),
        () => new CancelledError("backup cancelled"),
      );
    } catch (err) {
      await pit.abort().catch((abortErr) =>
        job.onMessage?.("warning", `cleanup after a failed backup: ${describeError(abortErr)}`)
      );
      throw err;
    }
    try {
      await job.beforeCommit?.();
      // The streams first: a checkpoint committed without its stream would be
      // a parent no restore has.
      await sinks.commit();
    } catch (err) {
      await pit.abort().catch(() => {});
      throw err;
    }
    const checkpoints = await pit.commit();
    for (const [i, outcome] of outcomes.entries()) {
      outcome.commitHashes();
      const stream = job.streamPath?.(outcome.result);
      await saveDiskState(job.stateDir, nextState(states[i], outcome, checkpoints[i], stream));
    }
    return outcomes.map((o) => o.result);
  } catch (err) {
    // Also a committed stream: the backup was not accepted.
    await sinks.discard();
    throw err;
  } finally {
    await opener.close?.();
    await Deno.remove(localDir, { recursive: true }).catch(() => {});
    await run?.end();
    await lock.release();
  }
}

/** What a backup of one disk would read, without touching any bitmap. */
export interface DiskEstimate {
  diskName: string;
  level: BackupLevel;
  fallback?: string;
  /**
   * Bytes the backup would read: dirty bytes for an incremental/differential;
   * for a full the image's host allocation, at most the virtual size.
   */
  bytes: number;
  /** Backup ids of the disk's last stream and last full stream, null without them. */
  lastBackupId: string | null;
  lastFullId: string | null;
}

/** Estimates a job from the checkpoint bitmaps' dirty counts; changes nothing in QEMU. */
export async function estimateBackup(job: BackupJob): Promise<DiskEstimate[]> {
  const qmp = typeof job.qmp === "string" ? await QmpSocket.connect(job.qmp) : job.qmp;
  try {
    const nodes = await queryBlockNodes(qmp);
    const names = bitmapNames("estimate", undefined, await ownerId(job.stateDir));
    const level = job.level === "auto" ? "incremental" : job.level;
    return await Promise.all(
      jobDisks(job).map(async ({ node, name }) => {
        const info = nodes.get(node);
        if (!info) throw missingNode(node);
        const state = await loadDiskState(job.stateDir, name);
        const plan = planDisk(info, state?.checkpoint, level, names, { takeOver: job.takeOver });
        return {
          diskName: name,
          level: plan.level,
          fallback: plan.reason,
          bytes: plan.source ? plan.source.count : Math.min(info.allocated ?? info.size, info.size),
          lastBackupId: state?.lastBackupId ?? null,
          lastFullId: state?.lastFullId ?? null,
        };
      }),
    );
  } finally {
    if (typeof job.qmp === "string") await qmp.close().catch(() => {});
  }
}

async function openPointInTimeQuiesced(
  job: BackupJob,
  qmp: QmpTransport,
  disks: PointInTimeRequest["disks"],
  ids: { checkpointId: string; owner: string },
  workDir: string,
  run: RunRecord,
): Promise<PointInTime> {
  const request = {
    run,
    disks,
    level: job.level === "auto" ? "incremental" as const : job.level,
    ...ids,
    takeOver: job.takeOver,
    workDir,
    nbdSocket: job.nbdSocket,
    removeFile: job.removeFile,
  };
  if (!job.workDir) await Deno.mkdir(request.workDir, { recursive: true });
  if (!job.quiesce) return await openPointInTime(qmp, request);
  await job.quiesce.freeze();
  try {
    return await openPointInTime(qmp, request);
  } finally {
    await job.quiesce.thaw();
  }
}

/**
 * Per disk, why its chain cannot go on whatever its bitmaps say, or
 * undefined: its size changed since the last backup (an incremental of
 * another size cannot apply on its parent), or the parent's stream is gone.
 */
async function brokenChains(
  job: BackupJob,
  qmp: QmpTransport,
  disks: JobDisk[],
  states: (DiskState | null)[],
): Promise<(string | undefined)[]> {
  const info = await queryBlockNodes(qmp);
  return await Promise.all(disks.map(async ({ node }, i) => {
    const found = chainBreak(job.level, states[i], info.get(node)?.size);
    if ("reason" in found) return found.reason;
    return found.parent ? await job.checkParent?.(found.parent) : undefined;
  }));
}

function throwIfCancelled(signal?: AbortSignal): void {
  if (signal?.aborted) throw new CancelledError("backup cancelled");
}
