/**
 * dirtybit: block-level incremental backup, DR replication and cross-restore
 * for CloudStack KVM clouds. Entry point: registers the subcommands and exits
 * with their code.
 *
 * @module
 */
import { register, runCli } from "./lib/cli/main.ts";
import { convertCommand } from "./lib/cli/convert.ts";
import { apiCommand } from "./lib/cli/api.ts";

register(convertCommand, apiCommand);

if (import.meta.main) {
  Deno.exit(await runCli(Deno.args));
}
