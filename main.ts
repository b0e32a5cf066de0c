/**
 * dirtybit: block-level incremental backup, DR replication and cross-restore
 * for CloudStack KVM clouds. Entry point: registers the subcommands and exits
 * with their code.
 *
 * @module
 */
import { register, runCli } from "./lib/cli/main.ts";
import type { CliHooks } from "./lib/cli/command.ts";
import { backupCommand } from "./lib/cli/backup.ts";
import { demoCommand } from "./lib/cli/demo.ts";
import { restoreCommand } from "./lib/cli/restore.ts";
import { inspectCommand, verifyCommand } from "./lib/cli/inspect.ts";
import { convertCommand } from "./lib/cli/convert.ts";
import { apiCommand } from "./lib/cli/api.ts";
import { replicateCommand } from "./lib/cli/replicate.ts";
import { failbackCommand, failoverCommand, reprotectCommand } from "./lib/cli/failover.ts";
import { backendCommand } from "./lib/cli/backend.ts";
import { listCommand, mergeCommand, pruneCommand } from "./lib/cli/keep.ts";
import { serveCommand } from "./lib/cli/serve.ts";
import { mountCommand, umountCommand } from "./lib/cli/mount.ts";
import { growPipe, tuneMalloc } from "./ffi/libc.ts";

register(
  backupCommand,
  restoreCommand,
  inspectCommand,
  verifyCommand,
  convertCommand,
  listCommand,
  mergeCommand,
  pruneCommand,
  serveCommand,
  mountCommand,
  umountCommand,
  apiCommand,
  demoCommand,
  replicateCommand,
  failoverCommand,
  failbackCommand,
  reprotectCommand,
  backendCommand,
);

/** Runs dirtybit with `args` in this process; tests' entry scripts inject `hooks`. */
export async function main(args: string[], hooks: CliHooks = {}): Promise<number> {
  // Streams, replicas, hash DBs, journals and state are copies of VM disks or hold their chains:
  // every file dirtybit and the tools it starts (qemu-img, qemu-nbd) create is 0600, every
  // directory 0700. Directories the operator made keep their own mode.
  Deno.umask(0o077);
  // Process-wide data-path settings (README "Memory and pipes"): streams, PTCOMM packets and
  // images go through stdin/stdout as megabyte writes, which a 1 MiB pipe takes whole.
  tuneMalloc();
  for (const fd of [0, 1]) growPipe(fd);
  return await runCli(args, hooks);
}

if (import.meta.main) Deno.exit(await main(Deno.args));
