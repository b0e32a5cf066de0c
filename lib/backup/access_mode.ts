/**
 * How the disks of a VM on a KVM host are read (`nbd_access_mode`): one file
 * per mode behind {@link AccessMode}, named in access_modes.ts. A mode carries
 * its behaviour, so the VM and domain jobs never ask which mode they run:
 *
 * - an {@link NbdAccessMode} says where libvirt's pull backup of the running
 *   domain serves its exports and how the engine reaches them
 *   ({@link ExportAccess});
 * - an {@link ApiAccessMode} reads the volumes through the CloudStack API
 *   itself, with no NBD and no SSH to the host.
 *
 * @module
 */
import type { AccessModeName } from "../core/access_mode_names.ts";
import type { CloudStackClient } from "../cloudstack/client.ts";
import type { ResolvedVm, VmVolume } from "../cloudstack/resolve.ts";
import type { BackupServer } from "../hosts/libvirt_xml.ts";
import type { SshHost } from "../hosts/ssh.ts";
import type { BackupJob, DiskEstimate, SinkFactory, SourceJobSettings } from "./engine.ts";
import type { DiskBackupResult } from "./plan.ts";

/** How the engine reaches the exports of one access mode; close it after the job. */
export interface DataPath {
  /** What the engine job needs for this path. */
  job: Pick<BackupJob, "nbdSocket" | "reachExport" | "beforeCommit" | "reads">;
  /** Closes tunnels, stops a server this path started. */
  close(): Promise<void>;
}

/** The exports read as they are, with nothing to open or check (this machine, direct TCP). */
export function directPath(): DataPath {
  return { job: {}, close: () => Promise.resolve() };
}

/** Where one pull backup serves its exports: the backup XML's `<server>` and each export's URI. */
export interface ExportServer {
  server: BackupServer;
  /** The NBD URI of the export named `exportName`. */
  uri(exportName: string): string;
}

/** Where libvirt's pull backup of a running domain serves its exports, and how they are read. */
export interface ExportAccess {
  /** The server of the job whose scratch directory on the host is `scratch`. */
  serve(scratch: string): ExportServer;
  /** The engine's path to the exports on the host: `remote` over SSH, else this machine. */
  dataPath(remote: SshHost | undefined): DataPath;
}

/** The VM's KVM host as an NBD mode needs it. */
export interface KvmHost {
  /** The host's address (where SSH reached it). */
  address: string;
  /** TCP port for libvirt's NBD server, where the mode serves on TCP. */
  nbdPort?: number;
}

/** A mode that reads libvirt's NBD exports on the KVM host. */
export interface NbdAccessMode {
  readonly kind: "nbd";
  readonly name: AccessModeName;
  /** Where a running domain on `host` serves its exports in this mode. */
  exports(host: KvmHost): ExportAccess;
}

/** A resolved VM and the volumes of it to back up. */
export interface VmVolumes {
  client: CloudStackClient;
  vm: ResolvedVm;
  volumes: VmVolume[];
}

/** A mode that reads the volumes through the CloudStack API, never reaching the host. */
export interface ApiAccessMode {
  readonly kind: "api";
  readonly name: AccessModeName;
  /** Backs the volumes up; `metadata` goes into every stream. */
  backup(
    open: VmVolumes,
    settings: SourceJobSettings,
    metadata: Record<string, unknown>,
    sinkFor: SinkFactory,
  ): Promise<DiskBackupResult[]>;
  /** What {@link backup} would read. */
  estimate(open: VmVolumes): DiskEstimate[];
}

/** One access mode. */
export type AccessMode = NbdAccessMode | ApiAccessMode;

/** The export name part of an NBD URI, still URI-encoded. */
export function exportPath(uri: string): string {
  return new URL(uri).pathname.replace(/^\//, "");
}
