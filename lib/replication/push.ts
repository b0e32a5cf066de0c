/**
 * The `replicate seed` and `replicate push` use cases: a seed, or cycles on
 * a schedule until a count or a stop signal, each failure recorded in the
 * disk's state. A one-shot push reports its failure; a long-running one
 * goes on (the next cycle carries the changes) unless the disk's role
 * forbids cycles, which no retry can change.
 *
 * @module
 */
import { describeError, RoleError } from "../core/errors.ts";
import { abortableSleep } from "../core/async.ts";
import type { Notify } from "./notify.ts";
import type { SendOptions } from "./batch.ts";
import { type CycleResult, pushCycle, seedDisk, type SeedResult } from "./sender.ts";
import { recordError, type ReplicatedDisk, type ReplicationTarget } from "./sender_state.ts";

/** A disk, where it goes, and how. */
export interface SendRequest {
  disk: ReplicatedDisk;
  target: ReplicationTarget;
  options: SendOptions;
  notify?: Notify;
}

/** Seeds the disk (or resumes its seed); a failure is recorded in its state. */
export async function seedOnce(req: SendRequest): Promise<SeedResult> {
  const { disk, target } = req;
  const r = await seedDisk(disk, target, withLog(req)).catch(async (err) => {
    await recordError(disk, target, err);
    throw err;
  });
  req.notify?.("done", describeSeed(disk.name, r));
  return r;
}

/** Request of {@link pushCycles}. */
export interface PushRequest extends SendRequest {
  /** Cycles to run; Infinity until `signal`. */
  cycles: number;
  /** Start to start. */
  intervalMs: number;
  signal: AbortSignal;
}

/** Result of {@link pushCycles}. */
export interface PushResult {
  confirmed: number;
  failed: number;
  /** Totals over the confirmed cycles. */
  stats: { dirtyBytes: number; payloadBytes: number; wireBytes: number };
}

/** Runs cycles per the request; a counted run throws its first failure. */
export async function pushCycles(req: PushRequest): Promise<PushResult> {
  const { disk, target, signal } = req;
  const result: PushResult = {
    confirmed: 0,
    failed: 0,
    stats: { dirtyBytes: 0, payloadBytes: 0, wireBytes: 0 },
  };
  for (let n = 0; n < req.cycles && !signal.aborted; n++) {
    if (n > 0) await abortableSleep(req.intervalMs, signal);
    if (signal.aborted) break;
    try {
      const r = await pushCycle(disk, target, withLog(req));
      result.confirmed++;
      result.stats.dirtyBytes += r.stats.dirtyBytes;
      result.stats.payloadBytes += r.stats.payloadBytes;
      result.stats.wireBytes += r.stats.wireBytes;
      req.notify?.("progress", describeCycle(disk.name, r));
    } catch (err) {
      await recordError(disk, target, err);
      if (req.cycles !== Infinity || err instanceof RoleError) throw err;
      result.failed++;
      req.notify?.("progress", `${disk.name}: cycle failed: ${describeError(err)}`);
    }
  }
  return result;
}

/** One line for a confirmed cycle. */
export function describeCycle(name: string, r: CycleResult): string {
  const s = r.stats;
  return `${name}: cycle ${r.cycle} confirmed: ${s.dirtyBytes} bytes dirty, ${s.unchangedBytes} unchanged, ` +
    `${s.payloadBytes} compressed, ${s.wireBytes} on the wire, ${r.seconds.toFixed(2)} s` +
    `${r.fullReason ? ` (full: ${r.fullReason})` : ""}`;
}

/** One line for a seed. */
export function describeSeed(name: string, r: SeedResult): string {
  return r.alreadySeeded
    ? `${name}: already seeded (seed ${r.seedId})`
    : `${name}: seeded${
      r.resumedFrom ? ` (resumed at ${r.resumedFrom})` : ""
    }, ${r.stats.wireBytes} bytes sent`;
}

function withLog(req: SendRequest): SendOptions {
  return { ...req.options, log: (line) => req.notify?.("progress", line) };
}
