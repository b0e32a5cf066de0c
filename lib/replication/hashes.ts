/**
 * Layer 2 for replication: a hash DB per replicated disk (`NAME.hashes.db`
 * in the sender's state directory, apart from any backup's) holding one
 * xxHash64 per block of the replica as the receiver has it. A block the
 * bitmap marks dirty whose hash equals the replica's is not sent. The DB is
 * committed only after the receiver confirmed the batch, under an id naming
 * the replica state it then describes; it is trusted only when that id is
 * the replica's current state.
 *
 * @module
 */
import { join } from "node:path";
import { HashDb } from "../cbt/hashdb.ts";
import { name as checkName } from "./messages.ts";

/** Path of a disk's replication hash DB. */
export function hashDbPath(stateDir: string, name: string): string {
  return join(stateDir, `${checkName(name)}.hashes.db`);
}

/** Opens (or creates) a disk's replication hash DB for this geometry. */
export function openHashDb(
  stateDir: string,
  name: string,
  blockSize: number,
  diskSize: number,
): HashDb {
  return HashDb.open(hashDbPath(stateDir, name), { blockSize, diskSize });
}

/** Hash DB id of a replica at a completed cycle (0 = the seed) of a seed. */
export function cycleKey(seedId: string, cycle: number): string {
  return `${seedId}:${cycle}`;
}

/** Hash DB id of an unfinished seed durable below `offset`. */
export function seedKey(seedId: string, offset: number): string {
  return `${seedId}@${offset}`;
}

/** What a cycle may do with the hash DB. */
export interface L2Decision {
  /** Compare dirty blocks with the DB (it describes the replica exactly). */
  compare: boolean;
  /** Commit the staged hashes once the cycle is confirmed. */
  commit: boolean;
}

/**
 * Decides L2 for a cycle. `remoteCycle` is the replica's applied cycle,
 * `baseCycle` the one the bitmap checkpoint dates from (≤ remoteCycle when a
 * confirmation was lost). Comparing needs the DB to describe the replica as
 * it is; committing after the cycle only needs every block outside the dirty
 * set to be right, which holds for either cycle (blocks outside the dirty set
 * did not change since `baseCycle`) — or when the view is full (every block is
 * staged). Otherwise the DB is left alone and every dirty block is sent. Pure.
 */
export function l2Decision(
  dbId: string | null,
  seedId: string,
  remoteCycle: number,
  baseCycle: number,
  fullView: boolean,
): L2Decision {
  const compare = dbId === cycleKey(seedId, remoteCycle);
  return { compare, commit: compare || fullView || dbId === cycleKey(seedId, baseCycle) };
}
