import type { VmSource } from "../backup/vm_job.ts";
import type { DomainSource } from "../backup/domain_job.ts";
import type { StreamSink } from "../sinks/sink.ts";
import type { Compression } from "../stream/compression.ts";
import type { BackupLevel, RequestedLevel } from "../core/level.ts";
import type { OnMessage } from "../core/log.ts";
import type { DiskBackupResult, PlannedDisk } from "../backup/plan.ts";
import type { VmDiskSpec } from "../restore/vm_disk_restore.ts";

/**
 * What the backend session needs from the backup engine and the restore
 * code, as one small interface: production passes the real engine
 * (lib/cli/backend.ts), protocol tests may pass a stand-in.
 *
 * @module
 */

/** The job handed to the engine (a subset of lib/backup/engine.ts BackupJob). */
export interface EngineJob {
  /** QMP socket of a local QEMU; unset when the disks come from a CloudStack `vm`. */
  qmp?: string;
  /** A CloudStack VM read on its KVM host (`vm=` with url and keys, without `qmp=`). */
  vm?: VmSource;
  /** A libvirt domain on this host (`domain=`). */
  domain?: DomainSource;
  /** Unix socket of an NBD server the QEMU already runs. */
  nbdSocket?: string;
  nodes: string[];
  level: RequestedLevel;
  stateDir: string;
  /** Take the disks over from other state directories' chains (`take_over=yes`). */
  takeOver?: boolean;
  compression: Compression;
  metadata?: Record<string, unknown>;
  signal?: AbortSignal;
  onMessage?: OnMessage;
}

/** One disk of an estimate. */
export interface EngineEstimate {
  diskName: string;
  level: BackupLevel;
  /** Bytes the backup would read: dirty, or allocated for a full. */
  bytes: number;
  /** Backup ids of the disk's last stream and last full stream in its state directory. */
  lastBackupId: string | null;
  lastFullId: string | null;
}

/** A restore target that applies streams in chain order. */
export interface EngineRestoreTarget {
  apply(
    stream: ReadableStream<Uint8Array>,
  ): Promise<{ backupId: string; level: string; bytes: number; notes?: string[] }>;
  close(): Promise<void>;
}

/** The engine operations the backend uses. */
export interface BackendEngine {
  runBackup(
    job: EngineJob,
    sinkFor: (disk: PlannedDisk) => Promise<StreamSink>,
  ): Promise<DiskBackupResult[]>;
  estimateBackup(job: EngineJob): Promise<EngineEstimate[]>;
  openRestore(target: { path: string; format: "raw" | "qcow2" }): Promise<EngineRestoreTarget>;
  /** A VM disk to restore onto in place (a block node of a local QEMU). */
  openVmDiskRestore(disk: VmDiskSpec): Promise<EngineRestoreTarget>;
}
