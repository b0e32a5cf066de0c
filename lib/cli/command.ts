/**
 * The shape of a subcommand. Each lives in its own file of lib/cli and is
 * listed once in lib/cli/main.ts.
 *
 * @module
 */

/** A subcommand: `run` returns the exit code or throws a typed error. */
export interface Command {
  readonly name: string;
  readonly summary: string;
  run(args: string[]): Promise<number>;
}
