/**
 * Per-disk backup state kept in the state directory: which backup the next
 * incremental builds on, the QEMU checkpoint bitmaps that record changes since
 * then, and the hash DB path. Written atomically, and only after a backup has
 * been accepted.
 *
 * @module
 */
import { join } from "node:path";
import type { DiskCheckpoint } from "../qemu/checkpoint.ts";
import { readJsonFile, writeFileAtomic } from "../core/atomic_file.ts";
import type { BackupLevel } from "../stream/format.ts";
import { makeDirectory } from "../core/files.ts";

/** One accepted backup in a disk's history. */
export interface BackupRecord {
  backupId: string;
  parentId: string | null;
  level: BackupLevel;
  time: string;
}

/** What the state directory remembers about one disk. */
export interface DiskState {
  diskName: string;
  chainId: string;
  virtualSize: number;
  blockSize: number;
  lastBackupId: string;
  lastFullId: string;
  checkpoint: DiskCheckpoint;
  history: BackupRecord[];
}

/** Most history entries kept per disk (older ones are only informative). */
const HISTORY_LIMIT = 100;

/** Files of one disk inside the state directory. */
export function diskStatePaths(stateDir: string, diskName: string) {
  const dir = join(stateDir, encodeURIComponent(diskName));
  return { dir, state: join(dir, "state.json"), hashDb: join(dir, "hashes.db") };
}

/** Loads a disk's state, or null when it has never been backed up here. */
export function loadDiskState(stateDir: string, diskName: string): Promise<DiskState | null> {
  return readJsonFile<DiskState>(diskStatePaths(stateDir, diskName).state);
}

/** Saves a disk's state durably (after the backup it describes was accepted). */
export async function saveDiskState(stateDir: string, state: DiskState): Promise<void> {
  const paths = diskStatePaths(stateDir, state.diskName);
  await makeDirectory(paths.dir, "the disk's state directory", { mode: 0o700 });
  const trimmed = { ...state, history: state.history.slice(-HISTORY_LIMIT) };
  await writeFileAtomic(paths.state, JSON.stringify(trimmed, null, 2) + "\n");
}

/** A new backup id: sortable by time, unique enough across hosts. */
export function newBackupId(now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  return `${stamp}-${crypto.randomUUID().slice(0, 8)}`;
}
