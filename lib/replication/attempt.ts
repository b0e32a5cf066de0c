/**
 * The one skeleton of a seed, a cycle and a resync attempt: retried while the
 * channel fails, under the disk's lock, after removing what a dead earlier
 * attempt left in QEMU; checks first (a refusal never reaches the network),
 * then connect, then the point in time, then the batches; the checkpoint is
 * committed with the new sender state only after the receiver confirmed, and
 * any failure aborts the point in time, so the old checkpoint keeps every
 * change for the next attempt.
 *
 * The bitmaps carry the owner id of the state directory (`STATE/owner-id`),
 * like a backup's: a disk whose replication bitmaps belong to another state
 * directory is refused (ChainError) unless the run takes it over. Unowned
 * bitmaps (made before owner ids) are ours when our state names them.
 *
 * @module
 */
import { join } from "node:path";
import { ownerId } from "../model/disk_state.ts";
import { DirtybitError, type Wording } from "../core/errors.ts";
import { RunRecord } from "../core/run_record.ts";
import { makeDirectory, openForWriting } from "../core/files.ts";
import {
  type DiskCheckpoint,
  openPointInTime,
  type PointInTime,
  queryBlockNode,
  removeLeftovers,
} from "../qemu/mod.ts";
import { foreignBitmaps, type OwnershipOptions } from "../qemu/checkpoint.ts";
import { lockDisks } from "../qemu/disk_lock.ts";
import { withRetries } from "./backoff.ts";
import type { SendOptions } from "./batch.ts";
import { SecureChannel, TransportError } from "./channel.ts";
import type { StateMessage } from "./messages.ts";
import { name as checkName } from "./messages.ts";
import {
  loadSenderState,
  type ReplicatedDisk,
  type ReplicationTarget,
  saveSenderState,
  type SenderState,
} from "./sender_state.ts";

/** A point-in-time view of the disk, as the batches read it. */
export type DiskView = PointInTime["disks"][number];

/**
 * The steps of one attempt, in the order they run. A fresh set per attempt
 * (see {@link runAttempts}), so they may keep what the attempt learns.
 */
export interface AttemptSteps<T> {
  /** Checks and state before anything connects. */
  check(): Promise<void>;
  /**
   * A checkpoint of the disk made here besides the sender state's (a
   * promotion's): its bitmaps are this state directory's.
   */
  known?: DiskCheckpoint;
  /**
   * With the channel connected, before the point in time: the checkpoint to
   * take it against, or a result when there is nothing to send.
   */
  open(channel: SecureChannel): Promise<{ checkpoint?: DiskCheckpoint } | { done: T }>;
  /** With the view open: sends the batches; the state is committed with the view. */
  send(channel: SecureChannel, view: DiskView): Promise<{ result: T; state: SenderState }>;
  /** After a failure of `send`: a state to commit instead of aborting (what is confirmed stays). */
  keep?(err: unknown): SenderState | undefined;
  /** After the commit. */
  committed?(result: T): Promise<void>;
}

/** Runs attempts of `steps()` until one succeeds or the retry policy gives up. */
export function runAttempts<T>(
  disk: ReplicatedDisk,
  target: ReplicationTarget,
  options: SendOptions,
  steps: () => AttemptSteps<T>,
): Promise<T> {
  return withRetries(
    target.retry,
    retryHooks(options),
    () => exclusively(disk, (run) => attempt(disk, target, steps(), run, options)),
  );
}

async function attempt<T>(
  disk: ReplicatedDisk,
  target: ReplicationTarget,
  steps: AttemptSteps<T>,
  run: RunRecord,
  options: SendOptions,
): Promise<T> {
  await steps.check();
  const ownership = await checkOwnership(disk, steps.known, options.takeOver);
  // Connect before taking the point in time: an unreachable receiver then
  // leaves QEMU untouched and the checkpoint keeps accumulating.
  const channel = await connect(target);
  try {
    const opened = await steps.open(channel);
    if ("done" in opened) return opened.done;
    const pit = await openView(disk, opened.checkpoint, ownership, run);
    let sent: { result: T; state: SenderState };
    try {
      sent = await steps.send(channel, pit.disks[0]);
    } catch (err) {
      const kept = steps.keep?.(err);
      if (kept) await commitView(disk, pit, kept).catch(() => pit.abort());
      else await pit.abort();
      throw err;
    }
    await commitView(disk, pit, sent.state);
    await steps.committed?.(sent.result);
    await channel.send({ type: "close" }).catch(() => {});
    return sent.result;
  } finally {
    channel.close();
  }
}

const TAKE_OVER_HINT: Wording = (p) =>
  `pass ${p("take_over")} to remove its bitmaps and replicate the disk from here ` +
  "(the next seed or cycle reads it whole)";

/**
 * Refuses a disk whose replication bitmaps belong to another state directory
 * (unless `takeOver`), before anything reaches the network; returns what the
 * point in time needs to tell its bitmaps from another owner's.
 */
async function checkOwnership(
  disk: ReplicatedDisk,
  known: DiskCheckpoint | undefined,
  takeOver = false,
): Promise<OwnershipOptions & { owner: string }> {
  const saved = (await loadSenderState(disk.stateDir, disk.name))?.checkpoint;
  const ownership = {
    owner: await ownerId(disk.stateDir),
    scope: await replicationScope(disk.node),
    adopt: [saved, known].flatMap((c) => c ? [c.incBitmap, c.baseBitmap] : []),
    takeOver,
    takeOverHint: TAKE_OVER_HINT,
  };
  foreignBitmaps(await queryBlockNode(disk.qmp, disk.node), saved, ownership.owner, ownership);
  return ownership;
}

/**
 * Bitmap scope of a disk's replication: its own per node, so that cleaning up
 * after a dead attempt on one disk never touches another disk's running one.
 */
export async function replicationScope(node: string): Promise<string> {
  const hash = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(node)),
  );
  return "r" +
    [...hash.subarray(0, 4)].map((b) => b.toString(16).padStart(2, "0")).join("").slice(0, 7);
}

/**
 * Runs one attempt holding the disk's lock file and its lock in QEMU (shared
 * with backups: one job per disk, whatever it is), after removing what a dead
 * earlier attempt left in QEMU (safe only under the lock: one sender per disk),
 * with a record of what it starts (its NBD server) for the next attempt.
 */
async function exclusively<T>(
  disk: ReplicatedDisk,
  attempt: (run: RunRecord) => Promise<T>,
): Promise<T> {
  await makeDirectory(disk.stateDir, "the state directory");
  const lock = await openForWriting(join(disk.stateDir, `${checkName(disk.name)}.lock`), {
    write: true,
    create: true,
  });
  try {
    await lock.lock(true);
    const diskLock = await lockDisks(disk.qmp, [disk.node]);
    try {
      // The scope is this node's own: nothing of a job on another disk is touched.
      await removeLeftovers(disk.qmp, { scope: await replicationScope(disk.node) });
      const run = await RunRecord.begin(disk.stateDir);
      try {
        return await attempt(run);
      } finally {
        await run.end();
      }
    } finally {
      await diskLock.release();
    }
  } finally {
    lock.close();
  }
}

/** A channel to the receiver, at the target's bandwidth limit. */
export async function connect(target: ReplicationTarget): Promise<SecureChannel> {
  return await SecureChannel.connect(target.host, target.port, {
    psk: target.psk,
    bandwidthBytesPerSecond: target.bandwidthBytesPerSecond,
  });
}

/** Opens replica `name` (of `size` bytes, 0 = as it is) and returns its state at the receiver. */
export async function openReplica(
  channel: SecureChannel,
  name: string,
  size: number,
): Promise<StateMessage> {
  await channel.send({ type: "open", name, size });
  return await channel.expect("state");
}

async function openView(
  disk: ReplicatedDisk,
  checkpoint: DiskCheckpoint | undefined,
  { owner, scope, adopt, takeOver, takeOverHint }: OwnershipOptions & { owner: string },
  run: RunRecord,
): Promise<PointInTime> {
  return await openPointInTime(disk.qmp, {
    run,
    disks: [{ node: disk.node, ...(checkpoint ? { checkpoint } : {}), adopt }],
    level: checkpoint ? "incremental" : "full",
    checkpointId: `${Date.now().toString(36)}-${crypto.randomUUID().slice(0, 8)}`,
    workDir: disk.workDir,
    scope,
    owner,
    takeOver,
    takeOverHint,
    ...(disk.nbdSocket ? { nbdSocket: disk.nbdSocket } : {}),
  });
}

/** Commits the view and persists the new checkpoint with `state` at once. */
async function commitView(
  disk: ReplicatedDisk,
  pit: PointInTime,
  state: SenderState,
): Promise<void> {
  const [checkpoint] = await pit.commit();
  await saveSenderState(disk.stateDir, { ...state, checkpoint });
}

function retryHooks(options: SendOptions) {
  return {
    retryable: (err: unknown) => err instanceof TransportError,
    onRetry: (err: unknown, retry: number, ms: number) =>
      options.log?.(
        `${err instanceof DirtybitError ? err.message : String(err)}; retry ${retry} in ${ms} ms`,
      ),
  };
}
