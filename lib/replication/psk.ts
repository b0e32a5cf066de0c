/**
 * Loading the pre-shared key (`psk_file` preferred over `psk`). The key is
 * returned to the caller and never appears in a message.
 *
 * @module
 */
import { UsageError } from "../core/errors.ts";
import { validatePsk } from "./handshake.ts";

/**
 * Reads a PSK file (one line; a trailing newline is ignored) and validates it.
 * A file that others may read or write is refused: whoever reads the key can
 * decrypt the replicated disks, whoever writes it can redirect them.
 */
export async function readPskFile(path: string): Promise<string> {
  let text: string;
  let mode: number | null;
  try {
    mode = (await Deno.stat(path)).mode;
    text = await Deno.readTextFile(path);
  } catch (err) {
    const why = err instanceof Deno.errors.NotFound ? "does not exist" : "cannot be read";
    throw new UsageError(`psk_file ${path} ${why}: give a readable file with the pre-shared key`);
  }
  const problem = pskModeProblem(mode);
  if (problem) {
    throw new UsageError(`psk_file ${path} is ${problem}: run 'chmod 600 ${path}'`);
  }
  return validatePsk(text.replace(/\r?\n$/, ""), `psk_file ${path}`);
}

/** What is wrong with a PSK file's permission bits (`null`: only its owner may use it). */
export function pskModeProblem(mode: number | null): string | null {
  if (mode === null || (mode & 0o077) === 0) return null;
  return `open to group or others (mode ${(mode & 0o777).toString(8).padStart(4, "0")})`;
}
