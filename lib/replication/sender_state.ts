/**
 * What a replicating sender knows of its disk and its target, and the state
 * file it keeps per disk (`STATE/NAME.replication.json`): the seed, the
 * checkpoint the next point in time is taken against, the last confirmed
 * cycle, totals and errors. `replicate status` reads these files.
 *
 * @module
 */
import { join } from "node:path";
import { readJsonFile, writeFileAtomic } from "../core/atomic_file.ts";
import { makeDirectory } from "../core/files.ts";
import type { DiskCheckpoint, QmpTransport } from "../qemu/mod.ts";
import type { RetryPolicy } from "./backoff.ts";
import type { BatchStats } from "./batch.ts";
import { name as checkName } from "./messages.ts";

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
