/**
 * Loading the pre-shared key (`psk_file` preferred over `psk`). The key is
 * returned to the caller and never appears in a message.
 *
 * @module
 */
import { UsageError } from "../core/errors.ts";
import { validatePsk } from "./handshake.ts";

/** Reads a PSK file (one line; a trailing newline is ignored) and validates it. */
export async function readPskFile(path: string): Promise<string> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    const why = err instanceof Deno.errors.NotFound ? "does not exist" : "cannot be read";
    throw new UsageError(`psk_file ${path} ${why}: give a readable file with the pre-shared key`);
  }
  return validatePsk(text.replace(/\r?\n$/, ""), `psk_file ${path}`);
}
