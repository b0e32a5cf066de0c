/**
 * Where each front end keeps state when `state_dir` (`--state-dir`) is not
 * given: the one place these defaults are declared.
 *
 * | front end and job                        | default state directory                         |
 * | ---------------------------------------- | ----------------------------------------------- |
 * | CLI `backup`                             | `$DIRTYBIT_STATE_DIR`, else `/var/lib/dirtybit` |
 * | CLI `replicate` seed, push, status       | `~/.local/state/dirtybit`                       |
 * | Bacula backup, estimate, in-place restore, sender modes | `WORKDIR/dirtybit/VM`            |
 * | Bacula: processes a replication job starts (pid, log, config) | `WORKDIR/dirtybit`         |
 *
 * The backend's is one per VM because a job locks its whole state directory
 * and Bacula runs jobs of different VMs at the same time. WORKDIR is the FD's
 * WorkingDir, {@link BACKEND_WORK_DIR} when Bacula sends none.
 *
 * @module
 */
import { join, resolve } from "node:path";

/** The backend's working directory when Bacula sends no WorkingDir (13.x); never the cwd (`/`). */
export const BACKEND_WORK_DIR = "/var/lib/dirtybit";

/** The CLI backup's state directory. */
export function cliBackupStateDir(
  given: string | undefined,
  env: string | undefined = Deno.env.get("DIRTYBIT_STATE_DIR"),
): string {
  return given ?? resolve(env ?? "/var/lib/dirtybit");
}

/** The CLI replication sender's state directory. */
export function cliReplicationStateDir(
  given: string | undefined,
  home: string | undefined = Deno.env.get("HOME"),
): string {
  return given ?? resolve(home ?? ".", ".local/state/dirtybit");
}

/** The backend's state directory of a VM; `vmDir` is the VM's name made a safe path component. */
export function backendStateDir(given: string | undefined, workDir: string, vmDir: string): string {
  return given ?? `${workDir}/dirtybit/${vmDir}`;
}

/** Where the backend keeps the pid files, logs and configs of the processes it starts. */
export function backendProcessDir(given: string | undefined, workDir: string): string {
  return given ?? join(workDir, "dirtybit");
}
