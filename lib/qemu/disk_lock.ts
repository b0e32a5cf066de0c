/**
 * One dirtybit job at a time per disk, whatever its state directory and
 * whether it backs up or replicates: a lock held in QEMU itself, next to the
 * bitmaps it protects, so every process that reaches the QEMU sees it.
 *
 * The lock is a pair of non-persistent, disabled bitmaps added in one QMP
 * transaction: `dirtybit-lock`, whose fixed name makes the add fail
 * atomically while another job holds it, and `dirtybit-lock@PID:START:HOST`
 * naming the holder (a {@link ProcessStamp} and the host it runs on).
 * Non-persistent: a restarted QEMU has no lock. A holder that died (same
 * host, its stamp no longer runs) is removed by the next job, in one
 * transaction that fails if anyone else removed or replaced it first.
 *
 * @module
 */
import { hostname } from "node:os";
import { BusyError } from "../core/errors.ts";
import { type ProcessStamp, selfStamp, stampAlive } from "../core/process.ts";
import { queryBlockNodes } from "./blocknodes.ts";
import type { QmpTransport } from "./qmp.ts";

const LOCK = "dirtybit-lock";

/** Who holds a disk's lock. */
export interface LockHolder extends ProcessStamp {
  host: string;
}

/** Locks held on some disks; `release` gives them up. */
export interface DiskLock {
  /** Dead holders whose locks were removed before taking them. */
  readonly removedStale: LockHolder[];
  /**
   * True if a live job (or one on another host) holds a lock on any other
   * disk of this QEMU: then QEMU-wide cleanup of dead runs must wait.
   */
  readonly othersRunning: boolean;
  release(): Promise<void>;
}

/** Name of the holder bitmap of `holder`. */
export function holderBitmap(holder: LockHolder): string {
  return `${LOCK}@${holder.pid}:${holder.start}:${holder.host}`;
}

/** The holder a bitmap names, or undefined if it is not a holder bitmap. */
export function parseHolder(name: string): LockHolder | undefined {
  const m = /^dirtybit-lock@(\d+):(\d+):(.+)$/.exec(name);
  return m ? { pid: Number(m[1]), start: Number(m[2]), host: m[3] } : undefined;
}

/** True if the lock bitmaps `name` belongs to (the lock or a holder). */
export function isLockBitmap(name: string): boolean {
  return name === LOCK || name.startsWith(`${LOCK}@`);
}

/** "pid 123 on host h". */
export function describeHolder(holder: LockHolder): string {
  return `dirtybit pid ${holder.pid} on host ${holder.host}`;
}

async function holderAlive(holder: LockHolder, host: string): Promise<boolean> {
  // Another host's process cannot be checked from here: it counts as running.
  return holder.host !== host || await stampAlive(holder);
}

/**
 * Takes the lock of every node in `nodes`, or none: BusyError naming the
 * holder if a live job holds one. Locks of dead holders are removed first.
 */
export async function lockDisks(qmp: QmpTransport, nodes: string[]): Promise<DiskLock> {
  const self: LockHolder = { ...(await selfStamp()), host: hostname() };
  const mine = holderBitmap(self);
  const removedStale: LockHolder[] = [];
  const held: string[] = [];
  const release = async () => {
    for (const node of held.splice(0)) {
      await qmp.execute("transaction", {
        actions: [LOCK, mine].map((name) => ({
          type: "block-dirty-bitmap-remove",
          data: { node, name },
        })),
      }).catch(() => {}); // the node or QEMU went away: nothing is left to release
    }
  };
  try {
    for (const node of [...new Set(nodes)].sort()) {
      await lockNode(qmp, node, self, removedStale);
      held.push(node);
    }
    const others = [...(await queryBlockNodes(qmp)).values()]
      .flatMap((n) => n.bitmaps.map((b) => parseHolder(b.name)))
      .filter((h): h is LockHolder => h !== undefined && holderBitmap(h) !== mine);
    let othersRunning = false;
    for (const h of others) othersRunning ||= await holderAlive(h, self.host);
    return { removedStale, othersRunning, release };
  } catch (err) {
    await release();
    throw err;
  }
}

async function lockNode(
  qmp: QmpTransport,
  node: string,
  self: LockHolder,
  removedStale: LockHolder[],
): Promise<void> {
  const add = (name: string) => ({
    type: "block-dirty-bitmap-add",
    data: { node, name, persistent: false, disabled: true },
  });
  // A stale lock is removed and the add retried; a few rounds bound a race of cleaners.
  for (let round = 0; round < 3; round++) {
    try {
      await qmp.execute("transaction", { actions: [add(LOCK), add(holderBitmap(self))] });
      return;
    } catch (err) {
      const bitmaps = (await queryBlockNodes(qmp)).get(node)?.bitmaps ?? [];
      if (!bitmaps.some((b) => b.name === LOCK)) throw err; // not a lock conflict
      const holders = bitmaps.map((b) => parseHolder(b.name)).filter((h) => h !== undefined);
      const holder = holders[0];
      if (!holder) {
        throw new BusyError(
          `disk node ${node} is locked by a dirtybit job that cannot be named ` +
            `(bitmap ${LOCK} without a holder): wait for it, or remove ${LOCK} if no job runs`,
        );
      }
      if (await holderAlive(holder, self.host)) {
        throw new BusyError(
          `disk node ${node} is busy: ${describeHolder(holder)} is backing it up or ` +
            `replicating it; wait for that job to end`,
        );
      }
      await qmp.execute("transaction", {
        actions: [LOCK, holderBitmap(holder)].map((name) => ({
          type: "block-dirty-bitmap-remove",
          data: { node, name },
        })),
      }).then(() => removedStale.push(holder), () => {}); // another job removed it first
    }
  }
  throw new BusyError(`disk node ${node} is busy: its lock changed hands while taking it`);
}
