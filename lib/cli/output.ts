/**
 * Output paths given on the command line. A device or FIFO (`/dev/null`, a
 * named pipe) is written as it is and never truncated, renamed over or
 * removed; only a regular file that a failed command wrote is removed.
 *
 * @module
 */
import { dirname } from "node:path";
import { fileWritable, openForWriting } from "../core/files.ts";
import { UsageError } from "../core/errors.ts";
import { isSpecialFile } from "../sinks/special.ts";

/** An opened output and how to undo it after a failure. */
export interface OutputFile {
  writable: WritableStream<Uint8Array>;
  /** Removes what a failed command wrote: a regular file only. */
  discard(): Promise<void>;
}

/** Opens an output path: a regular file is created or truncated, a device or FIFO just opened. */
export async function openOutput(path: string): Promise<OutputFile> {
  if (await isSpecialFile(path)) {
    const file = await openForWriting(path, { write: true });
    return { writable: fileWritable(file, path), discard: () => Promise.resolve() };
  }
  const file = await openForWriting(path, { write: true, create: true, truncate: true });
  return { writable: fileWritable(file, path), discard: () => Deno.remove(path).catch(() => {}) };
}

/**
 * Refuses `-` (standard output) for binary data when stdout is a terminal:
 * a stream or image there only garbles the screen. UsageError naming `what`.
 */
export function refuseTerminalStdout(command: string, what: string): void {
  if (Deno.stdout.isTerminal()) {
    throw new UsageError(
      `${command}: standard output is a terminal: ${what} is binary; redirect it (> FILE or | ...) or give a file`,
    );
  }
}

/**
 * Refuses an output path whose directory does not exist (`DIR/` itself, or
 * FILE's parent) with that message, before any work, instead of a failure
 * to open `FILE.partial` at the end.
 */
export async function requireOutputDir(command: string, flag: string, path: string): Promise<void> {
  const dir = path.endsWith("/") ? path : dirname(path);
  const info = await Deno.stat(dir).catch(() => null);
  if (!info?.isDirectory) {
    throw new UsageError(`${command}: --${flag} ${path}: directory ${dir} does not exist`);
  }
}
