/**
 * What a run creates or starts, written to its state directory BEFORE it does
 * so: the next run of the same state directory reads the records of runs
 * that died (their owner, a {@link ProcessStamp}, no longer runs) and removes
 * or stops what they left — only what a record names, so nothing that is not
 * recognisably dirtybit's own is touched.
 *
 * Records live in `STATE_DIR/.runs/PID-START-RANDOM.json`, one per run (a
 * replication daemon runs several in one process). Paths (scratch
 * directories, `.partial` streams) are removed by {@link RunRecord.begin}
 * itself; other items (QEMU's NBD server) are left in the dead run's record
 * for the code that can reach them ({@link RunRecord.leftovers},
 * {@link RunRecord.settle}).
 *
 * @module
 */
import { join } from "node:path";
import { readJsonFile, writeFileAtomic } from "./atomic_file.ts";
import { type ProcessStamp, selfStamp, stampAlive } from "./process.ts";

/** Something a run creates or starts. */
export type RunItem =
  /** A file or directory this run creates and removes (or renames) before it ends. */
  | { kind: "path"; path: string }
  /** QEMU's NBD server started by this run (see lib/qemu/nbd_server.ts). */
  | { kind: "nbd-server"; qmp: string; marker: string };

interface RecordFile {
  owner: ProcessStamp;
  items: RunItem[];
}

/** A record and where it is kept. */
interface RecordAt {
  path: string;
  record: RecordFile;
}

/** The record of this run; {@link RunRecord.end} it when the run ends. */
export class RunRecord {
  readonly #path: string;
  readonly #record: RecordFile;
  readonly #dead: RecordAt[];
  /** Saves of this record, one after another (disks of a job add items at once). */
  #saving: Promise<void> = Promise.resolve();

  private constructor(path: string, record: RecordFile, dead: RecordAt[]) {
    this.#path = path;
    this.#record = record;
    this.#dead = dead;
  }

  /**
   * Starts this run's record in `stateDir`, after removing the paths that
   * dead runs recorded there. Call it holding the state directory's lock.
   */
  static async begin(stateDir: string): Promise<RunRecord> {
    const dir = join(stateDir, ".runs");
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    const dead: RecordAt[] = [];
    for await (const entry of Deno.readDir(dir)) {
      const path = join(dir, entry.name);
      const named = /^(\d+)-(\d+)-[0-9a-f]+\.json\.tmp-/.exec(entry.name);
      if (named && !(await stampAlive({ pid: Number(named[1]), start: Number(named[2]) }))) {
        await Deno.remove(path).catch(() => {}); // a record its owner died writing
        continue;
      }
      if (!entry.isFile || !entry.name.endsWith(".json")) continue;
      const record = await readJsonFile<RecordFile>(path).catch(() => null);
      if (!record?.owner || !Array.isArray(record.items)) continue; // not a record of ours
      if (await stampAlive(record.owner)) continue;
      for (const item of record.items) {
        if (item.kind === "path") await Deno.remove(item.path, { recursive: true }).catch(() => {});
      }
      const run = { path, record: { ...record, items: record.items.filter(notPath) } };
      await save(run);
      if (run.record.items.length > 0) dead.push(run);
    }
    const owner = await selfStamp();
    const name = `${owner.pid}-${owner.start}-${crypto.randomUUID().slice(0, 8)}.json`;
    return new RunRecord(join(dir, name), { owner, items: [] }, dead);
  }

  /** Records `item`; do it before creating or starting what it names. */
  async add(item: RunItem): Promise<void> {
    this.#record.items.push(item);
    await this.#save();
  }

  /** Forgets `item` (it was removed or handed on). */
  async drop(item: RunItem): Promise<void> {
    const i = this.#record.items.indexOf(item);
    if (i < 0) return;
    this.#record.items.splice(i, 1);
    await this.#save();
  }

  /** Items of `kind` that dead runs left and nobody settled yet. */
  leftovers<K extends RunItem["kind"]>(kind: K): Extract<RunItem, { kind: K }>[] {
    return this.#dead.flatMap((run) => run.record.items)
      .filter((item): item is Extract<RunItem, { kind: K }> => item.kind === kind);
  }

  /** A dead run's `item` is dealt with: it leaves that run's record. */
  async settle(item: RunItem): Promise<void> {
    for (const run of this.#dead) {
      const i = run.record.items.indexOf(item);
      if (i < 0) continue;
      run.record.items.splice(i, 1);
      await save(run);
    }
  }

  /**
   * Ends the run: removes the paths still recorded (what a failed run could
   * not clean) and the record, unless something else is still recorded
   * (then the next run deals with it, as with a dead run).
   */
  async end(): Promise<void> {
    for (const item of this.#record.items.filter((i) => i.kind === "path")) {
      await Deno.remove(item.path, { recursive: true }).catch(() => {});
    }
    this.#record.items = this.#record.items.filter(notPath);
    await this.#save();
  }

  /**
   * Saves the record as it is when the save runs, after the saves before it:
   * concurrent atomic writes could otherwise land out of order and leave an
   * older list, without an item whose path then outlives a killed run.
   */
  #save(): Promise<void> {
    const next = this.#saving.then(() => save({ path: this.#path, record: this.#record }));
    this.#saving = next.catch(() => {});
    return next;
  }
}

function notPath(item: RunItem): boolean {
  return item.kind !== "path";
}

/** Writes a record, or removes it once it names nothing. */
async function save(run: RecordAt): Promise<void> {
  if (run.record.items.length > 0) {
    await writeFileAtomic(run.path, JSON.stringify(run.record) + "\n");
  } else {
    await Deno.remove(run.path).catch(() => {});
  }
}
