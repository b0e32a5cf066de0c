/**
 * Stream files: written as `FILE.partial`, synced when complete and renamed
 * to `FILE` on commit, before the engine commits the checkpoint: an accepted
 * backup never lacks its stream (a crash in between leaves at worst the
 * complete stream of a backup that was not accepted, which nothing builds
 * on). `--out` names a directory (one file per disk) or a file (one disk).
 *
 * @module
 */
import { join, resolve } from "node:path";
import { fileSystemError } from "../core/errors.ts";
import { openForWriting, writeToFile } from "../core/files.ts";
import { chunkReleasingSink } from "../stream/writer.ts";
import type { RunRecord } from "../core/run_record.ts";
import type { SinkKind, StreamSink } from "./sink.ts";

/** Any path that no other kind claims: a directory or a regular file. */
export const fileSinkKind: Omit<SinkKind, "claims"> = {
  name: "file",
  async open(out) {
    const dir = await Deno.stat(out).then((i) => i.isDirectory, () => false) ? out : null;
    return {
      dir,
      sink: (fileName, run) => openFileSink(resolve(dir ? join(dir, fileName) : out), run),
    };
  },
};

/** A stream file at `path`, written as `path.partial` until committed. */
export async function openFileSink(path: string, run: RunRecord): Promise<StreamSink> {
  const partial = `${path}.partial`;
  await run.add({ kind: "path", path: partial }); // the next run removes it if killed
  const file = await openForWriting(partial, { write: true, create: true, truncate: true });
  let committed = false;
  return {
    path,
    writable: chunkReleasingSink(
      new WritableStream({
        async write(chunk) {
          await writeToFile(file, partial, chunk);
        },
        async close() {
          try {
            await file.sync(); // a full disk may only show here (delayed allocation)
            file.close();
          } catch (err) {
            throw fileSystemError(err, "cannot write", path);
          }
        },
        abort() {
          file.close();
        },
      }),
    ),
    async commit() {
      try {
        await Deno.rename(partial, path);
      } catch (err) {
        throw fileSystemError(err, "cannot write", path);
      }
      committed = true;
    },
    async discard() {
      await Deno.remove(committed ? path : partial).catch(() => {});
    },
  };
}
