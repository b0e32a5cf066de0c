/**
 * dirtybit: block-level incremental backup, DR replication and cross-restore
 * for CloudStack KVM clouds. Entry point: registers the subcommands and exits
 * with their code.
 *
 * @module
 */
import { register, runCli } from "./lib/cli/main.ts";
import { convertCommand } from "./lib/cli/convert.ts";

register(convertCommand);

if (import.meta.main) {
  Deno.exit(await runCli(Deno.args));
}
