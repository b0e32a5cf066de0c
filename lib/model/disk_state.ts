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
import { InputError } from "../core/errors.ts";
import type { BackupLevel } from "../core/level.ts";
import { makeDirectory } from "../core/files.ts";

/** One accepted backup in a disk's history. */
export interface BackupRecord {
  backupId: string;
  parentId: string | null;
  level: BackupLevel;
  time: string;
  /** The stream file the front end wrote, if it wrote one (absolute path). */
  stream?: string;
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

/** The states of every disk kept in the state directory. */
export async function loadAllDiskStates(stateDir: string): Promise<DiskState[]> {
  const states: DiskState[] = [];
  try {
    for await (const entry of Deno.readDir(stateDir)) {
      if (!entry.isDirectory || entry.name.startsWith(".")) continue;
      const state = await loadDiskState(stateDir, decodeURIComponent(entry.name)).catch(() => null);
      if (state) states.push(state);
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return states;
}

/** Saves a disk's state durably (after the backup it describes was accepted). */
export async function saveDiskState(stateDir: string, state: DiskState): Promise<void> {
  const paths = diskStatePaths(stateDir, state.diskName);
  await makeDirectory(paths.dir, "the disk's state directory", { mode: 0o700 });
  const trimmed = { ...state, history: state.history.slice(-HISTORY_LIMIT) };
  await writeFileAtomic(paths.state, JSON.stringify(trimmed, null, 2) + "\n");
}

/**
 * The owner id of the state directory's chains, made once: the checkpoint
 * bitmaps carry it, so a run from another state directory knows the disk is
 * not its own. Made by a hard link of a complete file, which fails if another
 * run made it first: then that one's id is the id.
 */
export async function ownerId(stateDir: string): Promise<string> {
  const path = join(stateDir, "owner-id");
  const made = await readOwnerId(path);
  if (made) return made;
  const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  await writeFileAtomic(tmp, `${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}\n`);
  try {
    await Deno.link(tmp, path);
  } catch (err) {
    if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
  } finally {
    await Deno.remove(tmp);
  }
  return (await readOwnerId(path))!;
}

async function readOwnerId(path: string): Promise<string | undefined> {
  let id: string;
  try {
    id = (await Deno.readTextFile(path)).trim();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
  if (!/^[0-9a-f]{8,32}$/.test(id)) {
    throw new InputError((p) =>
      `${path} does not hold an owner id (hex digits): restore it, or remove it to start ` +
      `new chains (then the next backup needs ${p("take_over")})`
    );
  }
  return id;
}

/** A new backup id: sortable by time, unique enough across hosts. */
export function newBackupId(now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  return `${stamp}-${crypto.randomUUID().slice(0, 8)}`;
}
