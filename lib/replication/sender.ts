/**
 * The sending side: `seed` (first full copy, resumable), cycles (only what
 * the guest wrote since the last confirmed cycle) and the failback resync,
 * each an attempt of attempt.ts made of batches of batch.ts. Each batch is
 * read from a point-in-time view (lib/qemu), zero ranges go as zero records,
 * data is zstd-compressed where that shrinks it, and the bitmap checkpoint
 * advances only after the receiver confirmed the batch durable.
 *
 * @module
 */
import { ChainError, InputError, RoleError, UsageError } from "../core/errors.ts";
import { clipExtents, intersectMap, normalizeExtents, totalLength } from "../core/extent.ts";
import { dirtyExtents } from "../nbd/maps.ts";
import {
  type DiskCheckpoint,
  type QmpTransport,
  queryBlockNode,
  removeCheckpoint,
} from "../qemu/mod.ts";
import { cycleKey, l2Decision, openHashDb, seedKey } from "./hashes.ts";
import type { BeginMessage, KeptMessage, StateMessage } from "./messages.ts";
import { seedWindows } from "./plan.ts";
import { loadRole, saveRole } from "./role_file.ts";
import { applyStep, checkStep } from "./roles.ts";
import { connect, openReplica, runAttempts } from "./attempt.ts";
import {
  addStats,
  type BatchStats,
  blockSizeOf,
  emptyStats,
  openSource,
  readMeter,
  sendBatch,
  type SendOptions,
} from "./batch.ts";
import {
  freshState,
  loadSenderState,
  type ReplicatedDisk,
  type ReplicationTarget,
  saveSenderState,
  type SenderState,
} from "./sender_state.ts";

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
  return runAttempts<SeedResult>(disk, target, options, () => {
    let state: SenderState;
    let probe: StateMessage;
    let resumable = false;
    // Set once batches are sent: then what is confirmed is committed on a failure.
    let sent: { seedId: string; offset: number; caughtUp: boolean } | undefined;
    return {
      async check() {
        checkStep(await loadRole(disk.stateDir, disk.name, "primary"), "cycle");
        const saved = await loadSenderState(disk.stateDir, disk.name);
        state = saved ?? freshState(disk, target);
        // `replicate status` lists state files: a first seed shows as seeding from its start.
        if (!saved) await saveSenderState(disk.stateDir, state);
      },
      async open(channel) {
        probe = await openReplica(channel, disk.name, 0);
        await refuseOverRole(disk, state, probe);
        if (
          state.confirmedCycle !== undefined && probe.seedId === state.seedId &&
          probe.cycle !== undefined
        ) {
          return {
            done: {
              seedId: state.seedId!,
              alreadySeeded: true,
              resumedFrom: 0,
              stats: emptyStats(),
            },
          };
        }
        resumable = state.seedId !== undefined && probe.seedId === state.seedId &&
          state.checkpoint !== undefined && state.seedOffset !== undefined &&
          probe.seedOffset !== undefined;
        return resumable ? { checkpoint: state.checkpoint } : {};
      },
      async send(channel, view) {
        let offset = resumable && view.level !== "full"
          ? Math.min(state.seedOffset!, probe.seedOffset!)
          : 0;
        const seedId = offset > 0 ? state.seedId! : crypto.randomUUID();
        const resumedFrom = offset;
        const stats = emptyStats();
        const source = await openSource(view);
        const db = openHashDb(disk.stateDir, disk.name, blockSizeOf(view), view.size);
        const progress = { seedId, offset, caughtUp: offset === 0 };
        sent = progress;
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
          if (!progress.caughtUp) {
            const dirty = dirtyExtents(await source.blockStatus(view.dirtyContext!));
            const below = intersectMap(clipExtents(dirty, offset), map);
            options.log?.(
              `${disk.name}: seed resumes at ${offset}, ${totalLength(below)} bytes changed below`,
            );
            // Blocks below the offset are the replica's as the hash DB saw them
            // when it was committed at this very offset of this seed.
            const compare = db.id === seedKey(seedId, offset);
            meter.total += totalLength(below);
            addStats(
              stats,
              await sendBatch(channel, begin(offset), source, below, db, compare, options, meter),
            );
            db.commit(seedKey(seedId, offset));
            progress.caughtUp = true;
          }
          for (const w of seedWindows(view.size, offset, options.seedWindowBytes ?? 64 << 20)) {
            const end = w.offset + w.length;
            const window = intersectMap([w], map);
            addStats(
              stats,
              await sendBatch(channel, begin(end), source, window, db, false, options, meter),
            );
            db.commit(seedKey(seedId, end));
            offset = progress.offset = end;
          }
          db.commit(cycleKey(seedId, 0));
        } finally {
          await source.close();
          db.close();
        }
        const { seedOffset: _done, ...rest } = state;
        return {
          result: { seedId, alreadySeeded: false, resumedFrom, stats },
          state: { ...rest, seedId, confirmedCycle: 0, confirmedAt: new Date().toISOString() },
        };
      },
      // What is confirmed stays: commit the checkpoint so the next attempt
      // resumes at the offset — unless the catch-up batch did not make it, in
      // which case the old checkpoint still holds the changes it carried.
      keep(err) {
        if (!sent?.caughtUp || err instanceof UsageError) return undefined;
        return {
          ...state,
          seedId: sent.seedId,
          seedOffset: sent.offset,
          confirmedCycle: undefined,
        };
      },
    };
  });
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
  return runAttempts<CycleResult>(disk, target, options, () => {
    let started = 0;
    let state: SenderState & { seedId: string; confirmedCycle: number };
    return {
      async check() {
        started = performance.now();
        // A fenced disk sends nothing (failover pre); neither does a replica.
        checkStep(await loadRole(disk.stateDir, disk.name, "primary"), "cycle");
        const saved = await loadSenderState(disk.stateDir, disk.name);
        if (!saved || saved.confirmedCycle === undefined || !saved.seedId) {
          throw new UsageError(
            `disk ${disk.name} is not seeded yet: run 'dirtybit replicate seed' first`,
          );
        }
        state = { ...saved, seedId: saved.seedId, confirmedCycle: saved.confirmedCycle };
      },
      open: () => Promise.resolve({ checkpoint: state.checkpoint }),
      async send(channel, view) {
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
        const db = openHashDb(disk.stateDir, disk.name, blockSizeOf(view), view.size);
        let result: CycleResult;
        try {
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
          db.close();
        }
        const at = new Date().toISOString();
        return {
          result,
          state: {
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
          },
        };
      },
    };
  });
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
  const since = options.sincePromotion;
  return runAttempts<ResyncResult>(disk, target, options, () => {
    let started = 0;
    return {
      known: since?.checkpoint,
      check() {
        started = performance.now();
        return Promise.resolve();
      },
      open: () => Promise.resolve({ checkpoint: since?.checkpoint }),
      async send(channel, view) {
        const seedId = crypto.randomUUID();
        let stats: BatchStats;
        let kept: ResyncResult["kept"];
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
        const at = new Date().toISOString();
        return {
          result: { seedId, stats, kept },
          state: {
            ...freshState(disk, target),
            seedId,
            confirmedCycle: 0,
            confirmedAt: at,
            lastCycle: { ...stats, cycle: 0, seconds: (performance.now() - started) / 1000, at },
          },
        };
      },
      // The promotion's bitmaps may be of another scope than this node's:
      // the commit leaves them then.
      async committed() {
        if (since) await removeCheckpoint(disk.qmp, since.checkpoint).catch(() => {});
      },
    };
  });
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
