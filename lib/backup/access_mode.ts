/**
 * How the disks of a VM on a KVM host are read (`nbd_access_mode`): one file
 * per mode behind {@link AccessMode}, named in access_modes.ts.
 *
 * @module
 */
import type { BackupJob } from "./engine.ts";

/** How the engine reaches the exports of one access mode; close it after the job. */
export interface DataPath {
  /** What the engine job needs for this path. */
  job: Pick<BackupJob, "nbdSocket" | "reachExport" | "beforeCommit" | "reads">;
  /** Closes tunnels, stops a server this path started. */
  close(): Promise<void>;
}

/** One access mode. */
export interface AccessMode {
  readonly name: string;
  /**
   * Where libvirt's pull backup of a running domain serves its exports:
   * `unix`, a socket in the scratch directory on the host, read through the
   * SSH tunnel; `tcp`, the host's address and `nbd_port`, read directly; null
   * for a mode that reads no NBD and never reaches the host (api_only).
   * Images of a domain that does not run are always read through the tunnel.
   */
  readonly server: "unix" | "tcp" | null;
}

/** The export name part of an NBD URI, still URI-encoded. */
export function exportPath(uri: string): string {
  return new URL(uri).pathname.replace(/^\//, "");
}
