/**
 * Finds the backup streams under directories: walks them, reads only the
 * header of every file that starts like a stream (the stream reader checks
 * it), and reports the files that look like streams but cannot be read.
 * `.partial` files (a write in progress or a crashed run's) are left out.
 *
 * @module
 */
import { join } from "node:path";
import { describeError, InputError, SourceError, wrapError } from "../core/errors.ts";
import { STREAM_MAGIC } from "../stream/format.ts";
import { openStreamPath, StreamReader } from "../stream/reader.ts";
import type { CatalogEntry } from "./chains.ts";

/** A file that starts like a stream but whose header is invalid. */
export interface UnreadableStream {
  readonly path: string;
  readonly error: string;
}

/** The streams found and the files that could not be read as streams. */
export interface Catalog {
  readonly entries: CatalogEntry[];
  readonly unreadable: UnreadableStream[];
}

async function* walk(dir: string): AsyncGenerator<string> {
  let names: Deno.DirEntry[];
  try {
    names = await Array.fromAsync(Deno.readDir(dir));
  } catch (err) {
    throw wrapError(err, SourceError, `cannot read directory '${dir}': ${describeError(err)}`);
  }
  names.sort((a, b) => a.name.localeCompare(b.name));
  for (const e of names) {
    const path = join(dir, e.name);
    if (e.isDirectory) yield* walk(path);
    else if (e.isFile && !e.name.endsWith(".partial")) yield path;
  }
}

/** The stream header of `file`, reading no more of it than the header. */
async function readHeader(file: Deno.FsFile, path: string): Promise<StreamReader["header"]> {
  const chunk = new Uint8Array(64 << 10);
  // highWaterMark 0: nothing is read ahead, so closing the file after the header is safe.
  const source = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const n = await file.read(chunk);
      if (n === null) controller.close();
      else controller.enqueue(chunk.slice(0, n));
    },
  }, { highWaterMark: 0 });
  return (await StreamReader.open(source, path)).header;
}

async function startsLikeStream(file: Deno.FsFile): Promise<boolean> {
  const magic = new Uint8Array(STREAM_MAGIC.length);
  let got = 0;
  while (got < magic.length) {
    const n = await file.read(magic.subarray(got));
    if (n === null) break;
    got += n;
  }
  await file.seek(0, Deno.SeekMode.Start);
  return got === magic.length && magic.every((b, i) => b === STREAM_MAGIC[i]);
}

/** Reads one stream file's header; null when the file is not a stream at all. */
export async function catalogFile(
  path: string,
): Promise<CatalogEntry | UnreadableStream | null> {
  const file = await openStreamPath(path);
  try {
    if (!(await startsLikeStream(file))) return null;
    const { size } = await file.stat();
    return { path, header: await readHeader(file, path), size };
  } catch (err) {
    if (err instanceof InputError) return { path, error: err.message };
    throw err;
  } finally {
    file.close();
  }
}

/** Every stream under `dirs` (walked recursively; a file is taken as it is), in path order. */
export async function catalog(dirs: readonly string[]): Promise<Catalog> {
  const entries: CatalogEntry[] = [];
  const unreadable: UnreadableStream[] = [];
  for (const dir of dirs) {
    const info = await Deno.stat(dir).catch((err) => {
      throw wrapError(err, SourceError, `cannot read '${dir}': ${describeError(err)}`);
    });
    for await (const path of info.isFile ? [dir] : walk(dir)) {
      const found = await catalogFile(path);
      if (found && "header" in found) entries.push(found);
      else if (found) unreadable.push(found);
    }
  }
  return { entries, unreadable };
}
