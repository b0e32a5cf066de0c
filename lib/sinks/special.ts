/**
 * Standard output (`-`, e.g. a Bacula bpipe) and special files (a device or
 * FIFO such as /dev/null): written as they are, one disk's stream, nothing
 * to rename or remove (renaming a partial file over a device would replace
 * the device).
 *
 * @module
 */
import { fileWritable, openForWriting } from "../core/files.ts";
import { chunkReleasingSink } from "../stream/writer.ts";
import { passThroughSink, type SinkKind } from "./sink.ts";

/** `-`, or an existing path that is not a regular file or directory. */
export const specialSinkKind: SinkKind = {
  name: "special",
  claims: async (out) => out === "-" || await isSpecialFile(out),
  open(out) {
    return Promise.resolve({
      dir: null,
      sink: async () =>
        passThroughSink(chunkReleasingSink(
          out === "-"
            ? Deno.stdout.writable
            : fileWritable(await openForWriting(out, { write: true }), out),
        )),
    });
  },
};

/** True for an existing path that is not a regular file or directory (device, FIFO, socket). */
export async function isSpecialFile(path: string): Promise<boolean> {
  try {
    const info = await Deno.stat(path);
    return !info.isFile && !info.isDirectory;
  } catch {
    return false;
  }
}
