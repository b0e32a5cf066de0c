/**
 * How the disks of a VM on a KVM host are read (`nbd_access_mode`): one file
 * per mode behind {@link AccessMode}, named in access_modes.ts.
 *
 * @module
 */
import type { SshHost } from "../hosts/ssh.ts";
import type { QmpTransport } from "../qemu/qmp.ts";
import type { BackupJob } from "./engine.ts";

/** How the engine reaches the exports of one access mode; close it after the job. */
export interface DataPath {
  /** What the engine job needs for this path. */
  job: Pick<BackupJob, "nbdSocket" | "reachExport" | "beforeCommit" | "reads">;
  /** Closes tunnels, stops a server this path started. */
  close(): Promise<void>;
}

/** Where a data path is opened: the host's scratch dir for sockets, its address and NBD port. */
export interface DataPathPlace {
  scratch: string;
  address: string;
  port: number;
}

/** One access mode. */
export interface AccessMode {
  readonly name: string;
  /**
   * Opens the path the engine reads the host QEMU's NBD exports through;
   * null for a mode that reads no NBD and never reaches the host (api_only).
   */
  readonly openDataPath:
    | ((host: SshHost, qmp: QmpTransport, where: DataPathPlace) => Promise<DataPath>)
    | null;
}

/** The export name part of an NBD URI, still URI-encoded. */
export function exportPath(uri: string): string {
  return new URL(uri).pathname.replace(/^\//, "");
}
