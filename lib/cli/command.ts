/**
 * The shape of a subcommand. Each lives in its own file of lib/cli and is
 * listed once in lib/cli/main.ts.
 *
 * @module
 */

/**
 * What a test entry script injects into a run (main.ts's `main`); a real run
 * has none.
 */
export interface CliHooks {
  /**
   * Called at the named points of a use case where a crash leaves the most to
   * resume (the replica store's batch points, the failover steps' points);
   * crash tests stop the process there.
   */
  onPoint?: (point: string) => void;
}

/** A subcommand: `run` returns the exit code or throws a typed error. */
export interface Command {
  readonly name: string;
  readonly summary: string;
  run(args: string[], hooks?: CliHooks): Promise<number>;
}
