/**
 * `dirtybit backend`: the Bacula metaplugin backend (PTCOMM on stdin/stdout,
 * docs/ptcomm.md), bound to the real backup engine and restore sessions.
 * The FD starts it with no arguments, best through
 * lib/bacula/cloudstack_backend.sh (see docs/bacula.md).
 *
 * @module
 */
import type { Command } from "./command.ts";
import { UsageError } from "../core/errors.ts";
import { flagHelp, type ParamName, PARAMS, type ParamSpec } from "../params/params.ts";
import { serveBackend } from "../bacula/serve.ts";
import type { BackendEngine } from "../bacula/engine_port.ts";
import { estimateBackup, runBackup } from "../backup/engine.ts";
import { estimateVmBackup, runVmBackup } from "../backup/vm_job.ts";
import { estimateDomainBackup, runDomainBackup } from "../backup/domain_job.ts";
import { RestoreSession } from "../restore/session.ts";
import { VmDiskRestore } from "../restore/vm_disk_restore.ts";

/** The real engine behind the backend. */
const engine: BackendEngine = {
  runBackup: (job, sinkFor) =>
    job.domain
      ? runDomainBackup(job.domain, job, sinkFor)
      : job.vm
      ? runVmBackup(job.vm, job, sinkFor)
      : runBackup({ ...job, qmp: job.qmp! }, sinkFor),
  estimateBackup: (job) =>
    job.domain
      ? estimateDomainBackup(job.domain, job)
      : job.vm
      ? estimateVmBackup(job.vm, job)
      : estimateBackup({ ...job, qmp: job.qmp! }),
  openRestore: (target) => RestoreSession.open(target),
  openVmDiskRestore: (disk) => VmDiskRestore.open(disk),
};

const ALL = Object.keys(PARAMS) as ParamName[];
const bySetter = (bacula: boolean) =>
  ALL.filter((n) => ((PARAMS[n] as ParamSpec).setByBacula ?? false) === bacula);

const HELP = `usage: dirtybit backend

Bacula File Daemon metaplugin backend for the 'cloudstack' plugin (namespace @cloudstack):
speaks PTCOMM on stdin/stdout, logs to log_file, never writes to stderr. Started by the FD,
not by hand.

Plugin parameters (FileSet: Plugin = "cloudstack: key=value ..."):

${flagHelp(bySetter(false), "plugin")}

Set by Bacula itself (not for the FileSet):

${flagHelp(bySetter(true), "plugin")}`;

/** The `backend` subcommand. */
export const backendCommand: Command = {
  name: "backend",
  summary: "Bacula metaplugin backend (PTCOMM on stdin/stdout)",
  async run(args: string[]): Promise<number> {
    if (args.includes("--help") || args.includes("-h")) {
      console.log(HELP);
      return 0;
    }
    if (args.length > 0) {
      throw new UsageError(
        "dirtybit backend takes no arguments: its parameters come from the FileSet's Plugin line",
      );
    }
    return await serveBackend(engine);
  },
};
