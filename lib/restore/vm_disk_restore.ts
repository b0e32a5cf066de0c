/**
 * Restore back onto a VM's own disk (lib/targets/vm_disk_target.ts): a
 * chain applied with the same chain checks as a file target. What was applied last is kept in the backup state directory
 * (`<disk>/restored.json`), since the disk has no place for a sidecar.
 *
 * The guest must not write the disk meanwhile. QEMU refuses a writable export
 * of a node a guest device holds (permission conflict) unless that device
 * shares writes (`share-rw=on`), so callers must have the operator confirm
 * that the VM is stopped or the disk detached; with qemu-storage-daemon no
 * guest device exists.
 *
 * After an in-place restore the disk no longer matches its backup chain, so
 * the disk's backup state and checkpoint bitmaps are dropped: the next backup
 * is a full.
 *
 * @module
 */
import { join } from "node:path";
import { ChainError, describeError, SourceError, wrapError } from "../core/errors.ts";
import { readJsonFile, writeFileAtomic } from "../core/atomic_file.ts";
import { QmpSocket } from "../qemu/qmp.ts";
import { removeLeftovers } from "../qemu/leftovers.ts";
import { type DiskLock, lockDisks } from "../qemu/disk_lock.ts";
import { RunRecord } from "../core/run_record.ts";
import { removeCheckpoint } from "../qemu/bitmaps.ts";
import { checkChainOrder } from "../stream/chain.ts";
import { StreamReader } from "../stream/reader.ts";
import { diskStatePaths, loadDiskState } from "../model/disk_state.ts";
import { type JobLock, lockStateDir } from "../model/state_lock.ts";
import { type AppliedState, checkNextStream, copyRecords } from "./session.ts";
import type { RestoreTarget } from "../targets/target.ts";
import { openVmDiskTarget } from "../targets/vm_disk_target.ts";

/** Which disk to restore onto. */
export interface VmDiskSpec {
  /** QMP socket of the QEMU that has the disk. */
  qmp: string;
  /** Block node of the disk (its backups' disk name). */
  node: string;
  /** Unix socket of an NBD server the QEMU already runs (else one is started and stopped). */
  nbdSocket?: string;
  /** The disk's backup state directory: locked while restoring, its chain reset after. */
  stateDir: string;
}

/** The outcome of applying one stream to the disk. */
export interface VmDiskApplied {
  backupId: string;
  level: string;
  bytes: number;
  /** Things the operator must know (the backup chain was reset). */
  notes: string[];
}

/** Applies streams of one disk's chain onto the disk, in order. */
export class VmDiskRestore {
  readonly #spec: VmDiskSpec;
  readonly #lock: JobLock;
  readonly #run: RunRecord;
  readonly #qmp: QmpSocket;
  readonly #diskLock: DiskLock;
  #target: RestoreTarget | undefined;

  private constructor(
    spec: VmDiskSpec,
    lock: JobLock,
    run: RunRecord,
    qmp: QmpSocket,
    diskLock: DiskLock,
  ) {
    this.#spec = spec;
    this.#lock = lock;
    this.#run = run;
    this.#qmp = qmp;
    this.#diskLock = diskLock;
  }

  /**
   * Locks the state directory and the disk (no backup or replication of it
   * meanwhile, from any state directory), connects to QMP and removes what a
   * killed backup or restore left in QEMU.
   */
  static async open(spec: VmDiskSpec): Promise<VmDiskRestore> {
    await Deno.mkdir(spec.stateDir, { recursive: true, mode: 0o700 });
    const lock = await lockStateDir(spec.stateDir);
    let run: RunRecord | undefined;
    let qmp: QmpSocket | undefined;
    let diskLock: DiskLock | undefined;
    try {
      run = await RunRecord.begin(spec.stateDir);
      qmp = await QmpSocket.connect(spec.qmp);
      diskLock = await lockDisks(qmp, [spec.node]);
      if (!diskLock.othersRunning) await removeLeftovers(qmp);
      return new VmDiskRestore(spec, lock, run, qmp, diskLock);
    } catch (err) {
      await diskLock?.release();
      await qmp?.close().catch(() => {});
      await run?.end();
      await lock.release();
      throw err;
    }
  }

  get #recordPath(): string {
    return join(diskStatePaths(this.#spec.stateDir, this.#spec.node).dir, "restored.json");
  }

  /** Applies one stream on top of what the disk holds; throws unless it was applied completely. */
  async apply(stream: ReadableStream<Uint8Array>): Promise<VmDiskApplied> {
    const reader = await StreamReader.open(stream);
    const header = reader.header;
    const what = `disk ${this.#spec.node}`;
    const record = await readJsonFile<AppliedState>(this.#recordPath);
    if (header.level === "full") checkChainOrder(null, header);
    else checkNextStream(what, record, header);
    this.#target ??= await openVmDiskTarget(
      this.#qmp,
      this.#spec.node,
      this.#spec.nbdSocket,
      this.#run,
    );
    const target = this.#target;
    if (target.size !== header.virtualSize) {
      throw new ChainError(
        `${what} holds ${target.size} bytes but backup ${header.backupId} is of a ${header.virtualSize}-byte disk`,
      );
    }
    const dir = diskStatePaths(this.#spec.stateDir, this.#spec.node).dir;
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    await this.#saveRecord({ last: record?.last ?? header, applying: header.backupId });
    // A full covers only what was allocated: everything else must read as zeros.
    if (header.level === "full") await target.writeZero(0, target.size);
    const bytes = await copyRecords(reader, target, { skipZeros: header.level === "full" });
    await target.flush();
    await this.#saveRecord({ last: header });
    const notes = await this.#resetBackupChain();
    return { backupId: header.backupId, level: header.level, bytes, notes };
  }

  /**
   * Drops the disk's backup state and checkpoint bitmaps: the disk no longer
   * holds what its last backup saw, so the next backup must be a full.
   */
  async #resetBackupChain(): Promise<string[]> {
    const { stateDir, node } = this.#spec;
    const state = await loadDiskState(stateDir, node);
    if (!state) return [];
    await removeCheckpoint(this.#qmp, state.checkpoint);
    await Deno.remove(diskStatePaths(stateDir, node).state);
    return [
      `${node}: restored in place, so its backup chain (last backup ${state.lastBackupId}) no longer matches the disk: the next backup of ${node} will be a full`,
    ];
  }

  #saveRecord(record: AppliedState): Promise<void> {
    return writeFileAtomic(this.#recordPath, JSON.stringify(record, null, 2) + "\n");
  }

  /** Removes the export, closes QMP and releases the state directory. */
  async close(): Promise<void> {
    try {
      await this.#target?.close().catch((err) => {
        throw wrapError(err, SourceError, `removing the restore export: ${describeError(err)}`);
      });
    } finally {
      await this.#diskLock.release();
      await this.#qmp.close().catch(() => {});
      await this.#run.end();
      await this.#lock.release();
    }
  }
}
