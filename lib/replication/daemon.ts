/**
 * `dirtybit replicate daemon`: one schedule per disk. A disk that is not
 * seeded yet is seeded (or its interrupted seed resumed), then gets a cycle
 * every `cycle_interval` seconds, start to start; never two attempts of one
 * disk at once, and one QMP conversation per QEMU at a time (a monitor serves
 * one client). A failed attempt is recorded in the disk's state and the
 * schedule goes on; the next cycle carries the changes. Stopping (the
 * signal) ends the waits at once and lets attempts in flight finish; since
 * all progress lives in the state directory, a restart resumes. A disk whose
 * role forbids cycles (fenced here, or its replica promoted at the DR site)
 * is reported once and left alone: retrying cannot change an answer.
 *
 * @module
 */
import { abortableSleep } from "../core/async.ts";
import { describeError, RoleError } from "../core/errors.ts";
import type { QmpTransport } from "../qemu/mod.ts";
import { describeCycle, describeSeed } from "./push.ts";
import type { SendOptions } from "./batch.ts";
import { pushCycle, seedDisk } from "./sender.ts";
import {
  loadSenderState,
  recordError,
  type ReplicatedDisk,
  type ReplicationTarget,
} from "./sender_state.ts";

/** One disk under the daemon. */
export interface ScheduledDisk {
  /** QMP socket of the disk's QEMU, connected afresh for every attempt. */
  qmpPath: string;
  disk: Omit<ReplicatedDisk, "qmp">;
  target: ReplicationTarget;
  /** Time between the starts of two cycles. */
  intervalMs: number;
  options: SendOptions;
}

/** Runs every disk's schedule until `signal` aborts; resolves once all have stopped. */
export async function runDaemon(
  disks: ScheduledDisk[],
  signal: AbortSignal,
  log: (line: string) => void,
  connect: (path: string) => Promise<QmpTransport>,
): Promise<void> {
  const monitors = new Map<string, Promise<unknown>>();
  /** Runs `fn` once every earlier attempt on the same QMP socket has ended. */
  const onMonitor = <T>(path: string, fn: () => Promise<T>): Promise<T> => {
    const run = (monitors.get(path) ?? Promise.resolve()).then(fn);
    monitors.set(path, run.catch(() => {}));
    return run;
  };
  await Promise.all(disks.map((d) => schedule(d, signal, log, onMonitor, connect)));
}

async function schedule(
  d: ScheduledDisk,
  signal: AbortSignal,
  log: (line: string) => void,
  onMonitor: <T>(path: string, fn: () => Promise<T>) => Promise<T>,
  connect: (path: string) => Promise<QmpTransport>,
): Promise<void> {
  const name = d.disk.name;
  let refused = false;
  while (!signal.aborted && !refused) {
    const started = Date.now();
    await onMonitor(d.qmpPath, async () => {
      if (signal.aborted) return;
      const qmp = await connect(d.qmpPath);
      const disk: ReplicatedDisk = { ...d.disk, qmp };
      try {
        const state = await loadSenderState(disk.stateDir, name);
        if (state?.confirmedCycle === undefined) {
          log(describeSeed(name, await seedDisk(disk, d.target, d.options)));
        } else {
          log(describeCycle(name, await pushCycle(disk, d.target, d.options)));
        }
      } catch (err) {
        await recordError(disk, d.target, err).catch(() => {});
        refused = err instanceof RoleError;
        log(`${name}: ${describeError(err)}${refused ? "; no more attempts for this disk" : ""}`);
      } finally {
        await qmp.close();
      }
    }).catch((err) => log(`${name}: ${describeError(err)}`));
    if (!refused) await abortableSleep(Math.max(0, started + d.intervalMs - Date.now()), signal);
  }
}
