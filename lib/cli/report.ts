/**
 * Human progress and status lines: on stderr, and only when stderr is a
 * terminal, so scripts and Bacula's bpipe see nothing unexpected.
 *
 * @module
 */

const interactive = Deno.stderr.isTerminal();
const encoder = new TextEncoder();

/** Prints a status line on a terminal's stderr; silent otherwise. */
export function reportLine(text: string): void {
  if (interactive) Deno.stderr.writeSync(encoder.encode(`\r\x1b[K${text}\n`));
}

/** Overwrites the current progress line on a terminal's stderr. */
export function reportProgress(text: string): void {
  if (interactive) Deno.stderr.writeSync(encoder.encode(`\r\x1b[K${text}`));
}

export { formatBytes } from "./progress_view.ts";
