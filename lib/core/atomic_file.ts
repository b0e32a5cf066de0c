/**
 * Durable small-file writes: a crash leaves either the old or the new content,
 * never a torn file. Used for state and sidecar files.
 *
 * @module
 */
import { dirname } from "node:path";
import { fileSystemError, InputError } from "./errors.ts";
import { writeAll } from "./bytes.ts";

/**
 * Writes `content` to `path` via a synced temporary file and a rename, then
 * syncs the directory. A failure (a full or read-only disk) removes the
 * temporary file, leaves `path` as it was and names it in a typed error.
 */
export async function writeFileAtomic(path: string, content: string | Uint8Array): Promise<void> {
  const bytes = typeof content === "string" ? new TextEncoder().encode(content) : content;
  const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  try {
    const file = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
    try {
      await writeAll(file, bytes);
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw fileSystemError(err, "cannot write", path);
  }
  const dir = await Deno.open(dirname(path), { read: true });
  try {
    await dir.sync();
  } finally {
    dir.close();
  }
}

/** Reads and parses a JSON file; null when it does not exist, InputError when it is not JSON. */
export async function readJsonFile<T>(path: string): Promise<T | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw fileSystemError(err, "cannot read", path);
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new InputError(`${path} is not valid JSON: repair or remove it`);
  }
}
