/**
 * Output paths given on the command line. A device or FIFO (`/dev/null`, a
 * named pipe) is written as it is and never truncated, renamed over or
 * removed; only a regular file that a failed command wrote is removed.
 *
 * @module
 */
import { fileWritable, openForWriting } from "../core/files.ts";

/** True for an existing path that is not a regular file or directory (device, FIFO, socket). */
export async function isSpecialFile(path: string): Promise<boolean> {
  try {
    const info = await Deno.stat(path);
    return !info.isFile && !info.isDirectory;
  } catch {
    return false;
  }
}

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
