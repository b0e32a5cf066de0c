/**
 * The sending side: `seed` (first full copy, resumable) and cycles (only
 * what the guest wrote since the last confirmed cycle). Each batch is read
 * from a point-in-time view (lib/qemu), zero ranges go as zero records, data
 * is zstd-compressed where that shrinks it, and the bitmap checkpoint
 * advances only after the receiver confirmed the batch durable; any failure
 * aborts the point in time, so the old checkpoint keeps every change for the
 * next attempt.
 *
 * @module
 */
import { join } from "node:path";
import { ChainError, DirtybitError, InputError, RoleError, UsageError } from "../core/errors.ts";
import { RunRecord } from "../core/run_record.ts";
import {
  clipExtents,
  intersectMap,
  type MappedExtent,
  normalizeExtents,
  totalLength,
} from "../core/extent.ts";
import { dirtyExtents } from "../nbd/maps.ts";
import { readJsonFile, writeFileAtomic } from "../core/atomic_file.ts";
import { NbdSource } from "../nbd/reader.ts";
import {
  type DiskCheckpoint,
  openPointInTime,
  type PointInTime,
  type QmpTransport,
  queryBlockNode,
  removeCheckpoint,
  removeLeftovers,
} from "../qemu/mod.ts";
import { lockDisks } from "../qemu/disk_lock.ts";
import { zstdCompressIfSmaller } from "../stream/zstd.ts";
import type { HashDb } from "../cbt/hashdb.ts";
import { BlockClassifier } from "../cbt/layers.ts";
import { cycleKey, l2Decision, openHashDb, seedKey } from "./hashes.ts";
import { type RetryPolicy, withRetries } from "./backoff.ts";
import { SecureChannel, TransportError } from "./channel.ts";
import type { BeginMessage, KeptMessage, StateMessage } from "./messages.ts";
import { name as checkName } from "./messages.ts";
import { blockPlan, seedWindows } from "./plan.ts";
import { loadRole, saveRole } from "./role_file.ts";
import { applyStep, checkStep } from "./roles.ts";
import { makeDirectory, openForWriting } from "../core/files.ts";

/** Where batches go. */
export interface ReplicationTarget {
  host: string;
  port: number;
  psk: string;
  /** Cap in bytes per second. */
  bandwidthBytesPerSecond?: number;
  retry: RetryPolicy;
}

/** The disk being replicated. */
export interface ReplicatedDisk {
  qmp: QmpTransport;
  /** QEMU format node. */
  node: string;
  /** Replica name at the receiver. */
  name: string;
  /** Sender state directory (`NAME.replication.json`). */
  stateDir: string;
  /** Directory QEMU can write temporary overlays into. */
  workDir: string;
  /** Unix socket of QEMU's NBD server when it already runs one. */
  nbdSocket?: string;
}

/** Statistics of one batch or cycle. */
export interface BatchStats {
  /** Bytes of disk the batch covers (dirty ranges, or the seed window). */
  dirtyBytes: number;
  /** Of those, bytes that were read and sent as data. */
  dataBytes: number;
  /** Bytes read but not sent: equal to the replica's (layer 2, the hash DB). */
  unchangedBytes: number;
  /** Data payload bytes after compression. */
  payloadBytes: number;
  /** Bytes on the wire, frames and handshake included. */
  wireBytes: number;
  records: number;
}

/** The sender's state file. */
export interface SenderState {
  name: string;
  node: string;
  dr: string;
  seedId?: string;
  /** Checkpoint the next point in time is taken against. */
  checkpoint?: DiskCheckpoint;
  /** Last cycle the receiver confirmed (0 = the seed); absent until the seed completes. */
  confirmedCycle?: number;
  confirmedAt?: string;
  /** While seeding: the replica below this offset matches the source at `checkpoint`. */
  seedOffset?: number;
  lastCycle?: BatchStats & { cycle: number; seconds: number; at: string };
  totals: { cycles: number; dirtyBytes: number; payloadBytes: number; wireBytes: number };
  errors: number;
  lastError?: string;
  lastErrorAt?: string;
}

/** Options of {@link seedDisk} and {@link pushCycle}. */
export interface SendOptions {
  log?: (line: string) => void;
  /** Disk bytes read so far of the bytes this seed or cycle reads (after every chunk). */
  onProgress?: (done: number, total: number) => void;
  /** zstd level (default 3). */
  compressLevel?: number;
  /** Seed window per confirmed batch (default 64 MiB). */
  seedWindowBytes?: number;
}

const REQUEST_BYTES = 1 << 20;
/** Hash block size when QEMU reports no bitmap granularity. */
const DEFAULT_BLOCK_BYTES = 64 << 10;

/** Path of a disk's sender state file. */
export function senderStatePath(stateDir: string, name: string): string {
  return join(stateDir, `${checkName(name)}.replication.json`);
}

/**
 * Scratch directory of a disk's attempts (overlays, NBD socket) below
 * `parent` (default `STATE/work`): one per disk, since disks of other QEMUs
 * may share the state directory and each QEMU's NBD server needs a socket
 * path of its own.
 */
export function senderWorkDir(stateDir: string, name: string, parent?: string): string {
  return join(parent ?? join(stateDir, "work"), checkName(name));
}

/** Reads a disk's sender state (null before its first seed). */
export function loadSenderState(stateDir: string, name: string): Promise<SenderState | null> {
  return readJsonFile<SenderState>(senderStatePath(stateDir, name));
}

/** All sender states in a directory, sorted by name. */
export async function listSenderStates(stateDir: string): Promise<SenderState[]> {
  const out: SenderState[] = [];
  try {
    for await (const e of Deno.readDir(stateDir)) {
      if (!e.isFile || !e.name.endsWith(".replication.json")) continue;
      const s = await readJsonFile<SenderState>(join(stateDir, e.name));
      if (s) out.push(s);
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

/** Writes a disk's sender state atomically. */
export async function saveSenderState(stateDir: string, state: SenderState): Promise<void> {
  await makeDirectory(stateDir, "the state directory");
  await writeFileAtomic(
    senderStatePath(stateDir, state.name),
    JSON.stringify(state, null, 2) + "\n",
  );
}

/** The state of a disk that has sent nothing yet. */
export function freshState(
  disk: Pick<ReplicatedDisk, "name" | "node">,
  target: Pick<ReplicationTarget, "host" | "port">,
): SenderState {
  return {
    name: disk.name,
    node: disk.node,
    dr: `${target.host}:${target.port}`,
    totals: { cycles: 0, dirtyBytes: 0, payloadBytes: 0, wireBytes: 0 },
    errors: 0,
  };
}

/** Records a failed attempt in the state file (the error text, never a secret). */
export async function recordError(
  disk: ReplicatedDisk,
  target: ReplicationTarget,
  err: unknown,
): Promise<void> {
  const state = (await loadSenderState(disk.stateDir, disk.name)) ?? freshState(disk, target);
  state.errors++;
  state.lastError = (err instanceof Error ? err.message : String(err)).split("\n")[0];
  state.lastErrorAt = new Date().toISOString();
  await saveSenderState(disk.stateDir, state);
}

/** Result of {@link seedDisk}. */
export interface SeedResult {
  seedId: string;
  /** True when the replica was already seeded and nothing was sent. */
  alreadySeeded: boolean;
  resumedFrom: number;
  stats: BatchStats;
}

/**
 * Seeds the replica: a full copy in confirmed windows. An interrupted seed
 * resumes at the last confirmed window: the new point in time is taken
 * against the checkpoint committed when it stopped, and what changed below
 * that offset since then is sent first.
 */
export function seedDisk(
  disk: ReplicatedDisk,
  target: ReplicationTarget,
  options: SendOptions = {},
): Promise<SeedResult> {
  return withRetries(
    target.retry,
    retryHooks(options),
    () => exclusively(disk, (run) => seedAttempt(disk, target, options, run)),
  );
}

async function seedAttempt(
  disk: ReplicatedDisk,
  target: ReplicationTarget,
  options: SendOptions,
  run: RunRecord,
): Promise<SeedResult> {
  checkStep(await loadRole(disk.stateDir, disk.name, "primary"), "cycle");
  const saved = await loadSenderState(disk.stateDir, disk.name);
  const state = saved ?? freshState(disk, target);
  // `replicate status` lists state files: a first seed shows as seeding from its start.
  if (!saved) await saveSenderState(disk.stateDir, state);
  const channel = await connect(target);
  try {
    const probe = await openReplica(channel, disk.name, 0);
    await refuseOverRole(disk, state, probe);
    if (
      state.confirmedCycle !== undefined && probe.seedId === state.seedId &&
      probe.cycle !== undefined
    ) {
      return { seedId: state.seedId!, alreadySeeded: true, resumedFrom: 0, stats: emptyStats() };
    }
    const resumable = state.seedId !== undefined && probe.seedId === state.seedId &&
      state.checkpoint !== undefined && state.seedOffset !== undefined &&
      probe.seedOffset !== undefined;
    const pit = await openView(disk, resumable ? state.checkpoint : undefined, run);
    const view = pit.disks[0];
    let offset = resumable && view.level !== "full"
      ? Math.min(state.seedOffset!, probe.seedOffset!)
      : 0;
    const seedId = offset > 0 ? state.seedId! : crypto.randomUUID();
    const resumedFrom = offset;
    let caughtUp = offset === 0;
    const stats = emptyStats();
    const source = await openSource(view);
    const db = openHashDb(disk.stateDir, disk.name, blockSizeOf(view), view.size);
    try {
      const map = await source.map();
      const meter = readMeter(
        options,
        totalLength(intersectMap([{ offset, length: view.size - offset }], map)),
      );
      const begin = (seedEnd: number): BeginMessage => ({
        type: "begin",
        kind: "seed",
        seedId,
        size: view.size,
        cycle: 0,
        base: 0,
        seedEnd,
      });
      if (!caughtUp) {
        const dirty = dirtyExtents(await source.blockStatus(view.dirtyContext!));
        const below = intersectMap(clipExtents(dirty, offset), map);
        options.log?.(
          `${disk.name}: seed resumes at ${offset}, ${totalLength(below)} bytes changed below`,
        );
        // Blocks below the offset are the replica's as the hash DB saw them
        // when it was committed at this very offset of this seed.
        const compare = db.id === seedKey(seedId, offset);
        meter.total += totalLength(below);
        add(
          stats,
          await sendBatch(channel, begin(offset), source, below, db, compare, options, meter),
        );
        db.commit(seedKey(seedId, offset));
        caughtUp = true;
      }
      for (const w of seedWindows(view.size, offset, options.seedWindowBytes ?? 64 << 20)) {
        const end = w.offset + w.length;
        const window = intersectMap([w], map);
        add(
          stats,
          await sendBatch(channel, begin(end), source, window, db, false, options, meter),
        );
        db.commit(seedKey(seedId, end));
        offset = end;
      }
      db.commit(cycleKey(seedId, 0));
    } catch (err) {
      // What is confirmed stays: commit the checkpoint so the next attempt
      // resumes at `offset` — unless the catch-up batch did not make it, in
      // which case the old checkpoint still holds the changes it carried.
      await source.close();
      db.close();
      if (caughtUp && !(err instanceof UsageError)) {
        await commitView(disk, pit, {
          ...state,
          seedId,
          seedOffset: offset,
          confirmedCycle: undefined,
        })
          .catch(() => pit.abort());
      } else {
        await pit.abort();
      }
      throw err;
    }
    await source.close();
    db.close();
    const { seedOffset: _done, ...rest } = state;
    await commitView(disk, pit, {
      ...rest,
      seedId,
      confirmedCycle: 0,
      confirmedAt: new Date().toISOString(),
    });
    await channel.send({ type: "close" }).catch(() => {});
    return { seedId, alreadySeeded: false, resumedFrom, stats };
  } finally {
    channel.close();
  }
}

/** Result of {@link pushCycle}. */
export interface CycleResult {
  cycle: number;
  /** Why the view had to be a full one (lost or unusable checkpoint). */
  fullReason?: string;
  stats: BatchStats;
  seconds: number;
}

/**
 * Runs one replication cycle with retries: connects, takes a point in time
 * against the last confirmed checkpoint, sends the dirty ranges and commits
 * the checkpoint once the receiver confirmed the cycle durable.
 */
export function pushCycle(
  disk: ReplicatedDisk,
  target: ReplicationTarget,
  options: SendOptions = {},
): Promise<CycleResult> {
  return withRetries(
    target.retry,
    retryHooks(options),
    () => exclusively(disk, (run) => cycleAttempt(disk, target, options, run)),
  );
}

async function cycleAttempt(
  disk: ReplicatedDisk,
  target: ReplicationTarget,
  options: SendOptions,
  run: RunRecord,
): Promise<CycleResult> {
  const started = performance.now();
  // A fenced disk sends nothing (failover pre); neither does a replica.
  checkStep(await loadRole(disk.stateDir, disk.name, "primary"), "cycle");
  const state = await loadSenderState(disk.stateDir, disk.name);
  if (!state || state.confirmedCycle === undefined || !state.seedId) {
    throw new UsageError(
      `disk ${disk.name} is not seeded yet: run 'dirtybit replicate seed' first`,
    );
  }
  // Connect before taking the point in time: an unreachable receiver then
  // leaves QEMU untouched and the checkpoint keeps accumulating.
  const channel = await connect(target);
  try {
    const pit = await openView(disk, state.checkpoint, run);
    const view = pit.disks[0];
    let result: CycleResult;
    let db: HashDb | undefined;
    try {
      const remote = await openReplica(channel, disk.name, view.size);
      await refuseOverRole(disk, state, remote);
      if (remote.seedId !== state.seedId || remote.cycle === undefined) {
        throw new ChainError(
          `the receiver's replica ${disk.name} is not from this sender's seed: run 'dirtybit replicate seed' again`,
        );
      }
      if (remote.cycle < state.confirmedCycle) {
        throw new ChainError(
          `the receiver's replica ${disk.name} is at cycle ${remote.cycle}, older than the confirmed ${state.confirmedCycle}: seed it again`,
        );
      }
      const source = await openSource(view);
      db = openHashDb(disk.stateDir, disk.name, blockSizeOf(view), view.size);
      const l2 = l2Decision(
        db.id,
        state.seedId,
        remote.cycle,
        state.confirmedCycle,
        !view.dirtyContext,
      );
      if (!l2.compare) {
        options.log?.(
          `${disk.name}: the hash DB does not describe cycle ${remote.cycle}; every dirty block is sent`,
        );
      }
      try {
        const map = await source.map();
        const extents = view.dirtyContext
          ? intersectMap(dirtyExtents(await source.blockStatus(view.dirtyContext)), map)
          : map;
        // A cycle lost between the receiver's confirmation and our commit is
        // still in the old checkpoint: sending on top of the newer replica
        // state is safe because it is a superset of what changed since.
        const cycle = remote.cycle + 1;
        const stats = await sendBatch(
          channel,
          {
            type: "begin",
            kind: "cycle",
            seedId: state.seedId,
            size: view.size,
            cycle,
            base: state.confirmedCycle,
          },
          source,
          extents,
          db,
          l2.compare,
          options,
          readMeter(options, totalLength(extents)),
        );
        // Confirmed: the staged hashes now describe the replica (or, when the
        // DB's base is unknown, are dropped and L2 stays off).
        if (l2.commit) db.commit(cycleKey(state.seedId, cycle));
        else db.discard();
        result = {
          cycle,
          stats,
          seconds: (performance.now() - started) / 1000,
          ...(view.reason ? { fullReason: view.reason } : {}),
        };
      } finally {
        await source.close();
      }
    } catch (err) {
      await pit.abort();
      throw err;
    } finally {
      db?.close();
    }
    const at = new Date().toISOString();
    await commitView(disk, pit, {
      ...state,
      confirmedCycle: result.cycle,
      confirmedAt: at,
      lastCycle: { ...result.stats, cycle: result.cycle, seconds: result.seconds, at },
      totals: {
        cycles: state.totals.cycles + 1,
        dirtyBytes: state.totals.dirtyBytes + result.stats.dirtyBytes,
        payloadBytes: state.totals.payloadBytes + result.stats.payloadBytes,
        wireBytes: state.totals.wireBytes + result.stats.wireBytes,
      },
    });
    await channel.send({ type: "close" }).catch(() => {});
    return result;
  } finally {
    channel.close();
  }
}

/** Options of {@link resyncDisk}. */
export interface ResyncOptions extends SendOptions {
  /**
   * The bitmaps added to this disk when it was promoted at `cycle`: with the
   * receiver's divergent ranges against the same cycle, only the blocks
   * either side changed are read and compared, not the whole disk.
   */
  sincePromotion?: { checkpoint: DiskCheckpoint; cycle: number };
}

/** Result of {@link resyncDisk}. */
export interface ResyncResult {
  seedId: string;
  stats: BatchStats;
  /** Where the receiver kept its disk's blocks written after its last cycle. */
  kept: Omit<KeptMessage, "type" | "name">;
}

/**
 * Failback resync: makes the receiver's disk (the original primary's) equal
 * to this one without a full copy. The receiver hashes every block of its
 * image; the hashes become this disk's hash DB, and a point in time is sent
 * through layer 2, so only blocks whose hash differs travel: the whole disk,
 * or, after a promotion with bitmaps, what this side wrote since (its dirty
 * bitmap) and what the receiver's disk wrote after the same cycle (its
 * divergent ranges). The result is a new seed at cycle 0 with a checkpoint
 * here: cycles from this side follow (`replicate push`, `failback exec`).
 */
export function resyncDisk(
  disk: ReplicatedDisk,
  target: ReplicationTarget,
  options: ResyncOptions = {},
): Promise<ResyncResult> {
  return withRetries(
    target.retry,
    retryHooks(options),
    () => exclusively(disk, (run) => resyncAttempt(disk, target, options, run)),
  );
}

async function resyncAttempt(
  disk: ReplicatedDisk,
  target: ReplicationTarget,
  options: ResyncOptions,
  run: RunRecord,
): Promise<ResyncResult> {
  const started = performance.now();
  const channel = await connect(target);
  try {
    const since = options.sincePromotion;
    const pit = await openView(disk, since?.checkpoint, run);
    const view = pit.disks[0];
    const seedId = crypto.randomUUID();
    let stats: BatchStats;
    let kept: ResyncResult["kept"];
    try {
      await openReplica(channel, disk.name, view.size);
      const db = openHashDb(disk.stateDir, disk.name, blockSizeOf(view), view.size);
      try {
        await channel.send({ type: "hashes-request", name: disk.name, blockSize: db.blockSize });
        for (let next = 0; next < db.blockCount;) {
          const m = await channel.expect("hashes");
          if (m.first !== next || next + m.hashes.length > db.blockCount) {
            throw new InputError(`the receiver sent hashes from block ${m.first}, not ${next}`);
          }
          m.hashes.forEach((h, i) => db.stage(next + i, h));
          next += m.hashes.length;
        }
        const { type: _t, name: _n, ...aside } = await channel.expect("kept");
        kept = aside;
        db.commit(`resync-${seedId}`);
        const source = await openSource(view);
        try {
          const map = await source.map();
          const narrow = view.dirtyContext && kept.extents && kept.cycle === since?.cycle;
          if (since && !narrow) {
            options.log?.(
              `${disk.name}: ${
                view.reason ?? "the other side's divergent blocks are not known"
              }: every block is compared`,
            );
          }
          const extents = narrow
            ? intersectMap(
              normalizeExtents([
                ...dirtyExtents(await source.blockStatus(view.dirtyContext!)),
                ...kept.extents!.map(([offset, length]) => ({ offset, length })),
              ]),
              map,
            )
            : map;
          stats = await sendBatch(
            channel,
            { type: "begin", kind: "resync", seedId, size: view.size, cycle: 0, base: 0 },
            source,
            extents,
            db,
            true,
            options,
          );
        } finally {
          await source.close();
        }
        db.commit(cycleKey(seedId, 0));
      } finally {
        db.close();
      }
    } catch (err) {
      await pit.abort();
      throw err;
    }
    const at = new Date().toISOString();
    await commitView(disk, pit, {
      ...freshState(disk, target),
      seedId,
      confirmedCycle: 0,
      confirmedAt: at,
      lastCycle: { ...stats!, cycle: 0, seconds: (performance.now() - started) / 1000, at },
    });
    // The promotion's bitmaps may be of another scope than this node's:
    // the commit leaves them then.
    if (since) await removeCheckpoint(disk.qmp, since.checkpoint).catch(() => {});
    await channel.send({ type: "close" }).catch(() => {});
    return { seedId, stats: stats!, kept: kept! };
  } finally {
    channel.close();
  }
}

/**
 * Asks the receiver to change replica `name`'s role (`promote` at failback
 * exec, `reprotect`, `fenced` at failover pre); it must be at
 * `seedId`/`cycle`. Returns its new role.
 */
export async function changeRemoteRole(
  target: ReplicationTarget,
  type: "promote" | "reprotect" | "fenced",
  name: string,
  seedId: string,
  cycle: number,
): Promise<string> {
  const channel = await connect(target);
  try {
    await openReplica(channel, name, 0);
    await channel.send({ type, name, seedId, cycle });
    const done = await channel.expect("role-done");
    await channel.send({ type: "close" }).catch(() => {});
    return done.role;
  } finally {
    channel.close();
  }
}

/**
 * A replica that is not `replica/replicating` at the receiver (promoted by a
 * failover, fenced after a failback) takes no cycles: stop before sending
 * anything, and never retry. A primary here that the DR site promoted over is
 * fenced at once (it recorded nothing of the promotion), with what failback
 * needs to resync its disk: image, format, node and its last confirmed cycle.
 */
async function refuseOverRole(
  disk: ReplicatedDisk,
  state: SenderState,
  remote: StateMessage,
): Promise<void> {
  const r = remote.role;
  if (!r) return;
  const role = await loadRole(disk.stateDir, disk.name, "primary");
  const promoted = r.role === "primary/promoted";
  let fenced = "";
  if (promoted && role.role === "primary" && role.state === "replicating") {
    await saveRole(
      disk.stateDir,
      applyStep(role, "fence", {
        seedId: state.seedId,
        cycle: state.confirmedCycle,
        ...await diskImageOf(disk.qmp, disk.node),
        node: disk.node,
      }),
    );
    fenced = state.confirmedCycle === undefined
      ? "; this disk is fenced now (primary/fenced)"
      : `; this disk is fenced now (primary/fenced): what it wrote after cycle ${state.confirmedCycle} stays here`;
  }
  const by = `${r.step ? ` since ${r.step.replace("_", " ")}` : ""} at ${r.since}`;
  throw new RoleError(
    `the DR site's replica ${disk.name} is ${r.role}${by}` +
      `${r.cycle === undefined ? "" : `, cycle ${r.cycle}`}${
        r.unfenced ? ", promoted without fencing this site" : ""
      }: it takes no cycles from here${fenced}; ${
        promoted
          ? "run 'dirtybit failback pre' at the DR site to resync this disk from there"
          : "run 'dirtybit reprotect' at the primary"
      }`,
  );
}

/** The image file and format QEMU opens for `node` (failback writes into it). */
export async function diskImageOf(
  qmp: QmpTransport,
  node: string,
): Promise<{ image: string; format: "qcow2" | "raw" }> {
  const n = await queryBlockNode(qmp, node);
  if (n.driver !== "qcow2" && n.driver !== "raw") {
    throw new UsageError(`node ${node} is ${n.driver}: failback supports qcow2 and raw`);
  }
  return { image: n.filename, format: n.driver };
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

async function connect(target: ReplicationTarget): Promise<SecureChannel> {
  return await SecureChannel.connect(target.host, target.port, {
    psk: target.psk,
    bandwidthBytesPerSecond: target.bandwidthBytesPerSecond,
  });
}

async function openReplica(
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
  run: RunRecord,
): Promise<PointInTime> {
  return await openPointInTime(disk.qmp, {
    run,
    disks: [{ node: disk.node, ...(checkpoint ? { checkpoint } : {}) }],
    level: checkpoint ? "incremental" : "full",
    checkpointId: `${Date.now().toString(36)}-${crypto.randomUUID().slice(0, 8)}`,
    workDir: disk.workDir,
    scope: await replicationScope(disk.node),
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

/**
 * Sends one batch — begin, zero records, data records, end — and waits for
 * the receiver's durable confirmation. Layers: whole blocks inside zero
 * ranges go as zero records unread (L3 by map); every block read is hashed
 * and staged in `db`, skipped when `compare` and equal to the replica's (L2),
 * sent as a zero record when all zero (L3), else compressed.
 */
async function sendBatch(
  channel: SecureChannel,
  begin: BeginMessage,
  source: NbdSource,
  extents: MappedExtent[],
  db: HashDb,
  compare: boolean,
  options: SendOptions,
  meter?: ReadMeter,
): Promise<BatchStats> {
  const wireBefore = channel.bytesSent;
  const stats = emptyStats();
  stats.dirtyBytes = totalLength(extents);
  const classifier = new BlockClassifier(db, { compareWithParent: compare });
  const { read, zero } = blockPlan(extents, db.blockSize, begin.size);
  await channel.send(begin);
  let bytes = 0;
  const sendZero = async (offset: number, length: number) => {
    await channel.send({ type: "zero", offset, length });
    stats.records++;
    bytes += length;
  };
  for (const z of zero) {
    classifier.stageUnread(z);
    await sendZero(z.offset, z.length);
  }
  const level = options.compressLevel ?? 3;
  for await (const chunk of source.readExtents(read)) {
    meter?.read(chunk.data.length);
    for (const run of classifier.classify(chunk.offset, chunk.data)) {
      if (run.kind === "zero") {
        await sendZero(run.offset, run.length);
        continue;
      }
      const packed = zstdCompressIfSmaller(run.data, level);
      await channel.send({
        type: "data",
        offset: run.offset,
        length: run.length,
        codec: packed ? "zstd" : "raw",
        payload: packed ?? run.data,
      });
      stats.records++;
      bytes += run.length;
      stats.dataBytes += run.length;
      stats.payloadBytes += packed ? packed.length : run.length;
    }
  }
  stats.unchangedBytes = classifier.stats.unchangedBytes;
  await channel.send({ type: "end", records: stats.records, bytes });
  const confirm = await channel.expect("confirm");
  if (confirm.seedId !== begin.seedId || confirm.cycle !== begin.cycle) {
    throw new ChainError(`the receiver confirmed cycle ${confirm.cycle}, not ${begin.cycle}`);
  }
  stats.wireBytes = channel.bytesSent - wireBefore;
  return stats;
}

/** Counts the bytes a seed or cycle reads against its total, for `onProgress`. */
interface ReadMeter {
  total: number;
  read(bytes: number): void;
}

function readMeter(options: SendOptions, total: number): ReadMeter {
  let done = 0;
  const meter = {
    total,
    read(bytes: number) {
      done += bytes;
      options.onProgress?.(done, meter.total);
    },
  };
  return meter;
}

/** Hash block size of a view: the bitmap granularity (whole dirty blocks). */
function blockSizeOf(view: { granularity: number }): number {
  return view.granularity || DEFAULT_BLOCK_BYTES;
}

async function openSource(view: PointInTime["disks"][number]): Promise<NbdSource> {
  return await NbdSource.open(view.uri, {
    metaContexts: view.dirtyContext ? [view.dirtyContext] : [],
    // Whole hash blocks per request, so every chunk is block-aligned.
    read: { requestSize: Math.max(REQUEST_BYTES, blockSizeOf(view)) },
  });
}

function emptyStats(): BatchStats {
  return {
    dirtyBytes: 0,
    dataBytes: 0,
    unchangedBytes: 0,
    payloadBytes: 0,
    wireBytes: 0,
    records: 0,
  };
}

function add(into: BatchStats, more: BatchStats): void {
  into.dirtyBytes += more.dirtyBytes;
  into.dataBytes += more.dataBytes;
  into.unchangedBytes += more.unchangedBytes;
  into.payloadBytes += more.payloadBytes;
  into.wireBytes += more.wireBytes;
  into.records += more.records;
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
