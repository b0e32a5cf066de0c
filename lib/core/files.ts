/**
 * Opening output files with the one error every layer reports for it, and
 * whether a path exists.
 *
 * @module
 */
import { describeError, TargetError } from "./errors.ts";

/** Opens `path` for writing, or a TargetError naming it. */
export async function openForWriting(
  path: string,
  options: Deno.OpenOptions,
): Promise<Deno.FsFile> {
  try {
    return await Deno.open(path, options);
  } catch (err) {
    throw new TargetError(`cannot open ${path} for writing: ${describeError(err)}`);
  }
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
