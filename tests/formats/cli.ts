/**
 * Runs `dirtybit convert` as the user does (`dirtybit convert ... --out - | cat > FILE`), with
 * this test's own Deno (`Deno.execPath()`) running main.ts.
 *
 * @module
 */
import { run, type RunResult } from "./oracle.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** Runs `dirtybit ARGS --out - | cat > out`; the exit code is dirtybit's. */
export function convertToPipe(args: string[], out: string): Promise<RunResult> {
  const quoted = args.map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(" ");
  return run("bash", [
    "-c",
    `set -o pipefail; '${Deno.execPath()}' run -A '${MAIN}' convert ${quoted} --out - | cat > '${out}'`,
  ]);
}
