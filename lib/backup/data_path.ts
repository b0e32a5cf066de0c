/**
 * Reading the exports of a point in time on a host reached over SSH: one
 * OpenSSH tunnel per unix socket there, each checked before the commit, so
 * a tunnel that drops (even after the last read) fails the job and the next
 * incremental still has every change.
 *
 * @module
 */
import { SourceError } from "../core/errors.ts";
import type { SshHost, SshTunnel } from "../hosts/ssh.ts";
import type { BackupJob } from "./engine.ts";
import type { ReadParallelism } from "./disk_backup.ts";

/**
 * Reads through an SSH tunnel: every request waits on the ssh processes'
 * ciphers, so four connections (four SSH channels) with eight requests in
 * flight keep them busy. Measured on 2 GiB: 4.4 s with 2 x 4, 3.75 s with
 * 4 x 8 (nbdcopy through the same tunnel: 3.47 s).
 */
const TUNNEL_READS: ReadParallelism = { connections: 4, inFlight: 8 };

/** How the engine reaches the exports of a host; close it after the job. */
export interface DataPath {
  /** What the engine job needs for this path. */
  job: Pick<BackupJob, "reachExport" | "beforeCommit" | "reads">;
  /** Closes the tunnels. */
  close(): Promise<void>;
}

/** The tunnelled path to `host`'s unix-socket exports (see the module doc). */
export function tunnelDataPath(host: SshHost): DataPath {
  const tunnels = new Map<string, Promise<SshTunnel>>();
  return {
    job: {
      reads: TUNNEL_READS,
      reachExport: async (uri) => {
        const socket = new URL(uri).searchParams.get("socket");
        if (!socket) throw new SourceError(`export ${uri} has no unix socket to tunnel to`);
        if (!tunnels.has(socket)) tunnels.set(socket, host.openTunnel({ socket }));
        const tunnel = await tunnels.get(socket)!;
        return tunnel.nbdUri(decodeURIComponent(new URL(uri).pathname.replace(/^\//, "")));
      },
      beforeCommit: async () => {
        for (const tunnel of tunnels.values()) (await tunnel).check();
      },
    },
    close: async () => {
      for (const tunnel of tunnels.values()) await (await tunnel.catch(() => null))?.close();
    },
  };
}
