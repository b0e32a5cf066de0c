/**
 * Opening output files with the one error every layer reports for it.
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
