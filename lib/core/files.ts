/**
 * Opening output files and making directories with the one error every layer
 * reports for them (the path named, and what is wrong with it), and whether a
 * path exists.
 *
 * @module
 */
import { fileSystemError } from "./errors.ts";
import { writeAll } from "./bytes.ts";

/** Opens `path` for writing, or a typed error naming it. */
export async function openForWriting(
  path: string,
  options: Deno.OpenOptions,
): Promise<Deno.FsFile> {
  try {
    return await Deno.open(path, options);
  } catch (err) {
    throw fileSystemError(err, "cannot open for writing", path);
  }
}

/**
 * The longest path a Unix socket can have on Linux: `sun_path` holds 108
 * bytes, the closing NUL among them.
 */
export const UNIX_SOCKET_PATH_MAX = 107;

/** Whether `path` is short enough to be a Unix socket's (counted in UTF-8 bytes, as the kernel does). */
export function fitsUnixSocket(path: string): boolean {
  return new TextEncoder().encode(path).length <= UNIX_SOCKET_PATH_MAX;
}

/** True when something (a dangling symlink too) is at `path`. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Creates directory `path` and its parents, or a typed error naming it and `what` it is. */
export async function makeDirectory(
  path: string,
  what: string,
  options: { mode?: number } = {},
): Promise<void> {
  try {
    await Deno.mkdir(path, { recursive: true, ...options });
  } catch (err) {
    throw fileSystemError(err, `cannot create ${what}`, path);
  }
}

/** Writes `bytes` at the position of `file`, or a typed error naming `path` (a full disk...). */
export async function writeToFile(file: Deno.FsFile, path: string, bytes: Uint8Array) {
  try {
    await writeAll(file, bytes);
  } catch (err) {
    throw fileSystemError(err, "cannot write", path);
  }
}

/** The writable of an opened file whose failures name `path`. */
export function fileWritable(file: Deno.FsFile, path: string): WritableStream<Uint8Array> {
  return new WritableStream({
    write: (chunk) => writeToFile(file, path, chunk),
    close: () => file.close(),
    abort: () => file.close(),
  });
}
