/**
 * Subcommand dispatch and the one place where errors become messages and exit
 * codes. Nothing below lib/cli prints to stderr or exits.
 *
 * @module
 */
import type { CliHooks, Command } from "./command.ts";
import { describeError, typedError, UsageError } from "../core/errors.ts";
import { READABLE_VERSIONS, STREAM_VERSION } from "../stream/format.ts";
import config from "../../deno.json" with { type: "json" };
import { flagOf } from "./args.ts";

const commands: Command[] = [];

/** Registers subcommands (called once by main.ts). */
export function register(...cmds: Command[]): void {
  commands.push(...cmds);
}

function usage(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    "usage: dirtybit COMMAND [options]   (dirtybit COMMAND --help for details)",
    "       dirtybit --version",
    "",
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
  ].join("\n");
}

/** `dirtybit --version`: the program's version and the stream format versions it handles. */
export function versionText(): string {
  return [
    `dirtybit ${config.version}`,
    `stream format: writes version ${STREAM_VERSION}, reads versions ${
      READABLE_VERSIONS.join(", ")
    }`,
  ].join("\n");
}

/** Runs the command line and returns the process exit code. */
export async function runCli(args: string[], hooks: CliHooks = {}): Promise<number> {
  const [name, ...rest] = args;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    console.log(usage());
    return name ? 0 : 2;
  }
  if (name === "--version" || name === "-V" || name === "version") {
    console.log(versionText());
    return 0;
  }
  try {
    const cmd = commands.find((c) => c.name === name);
    if (!cmd) throw new UsageError(`unknown command '${name}': run 'dirtybit --help' for the list`);
    return await cmd.run(rest, hooks);
  } catch (err) {
    const typed = typedError(err);
    if (typed) {
      console.error(`dirtybit: ${describeError(typed, flagOf)}`);
      if (typed !== err && Deno.env.get("DIRTYBIT_DEBUG")) console.error(err);
      return typed.exitCode;
    }
    console.error(`dirtybit: internal error: ${describeError(err)} (please report it)`);
    if (Deno.env.get("DIRTYBIT_DEBUG")) console.error(err);
    return 70;
  }
}
