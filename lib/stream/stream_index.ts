/**
 * Indexes of stream files for random access (serve): each stream's records,
 * found by reading record headers only, kept beside it as `STREAM.idx`
 * (index_layout.ts) so the next run starts at once. A missing, stale or
 * damaged index is rebuilt; one that cannot be written is only a warning.
 *
 * @module
 */
import { writeFileAtomic } from "../core/atomic_file.ts";
import type { Log } from "../core/log.ts";
import { describeError, SourceError, UsageError, wrapError } from "../core/errors.ts";
import { checkChainOrder } from "./chain.ts";
import type { StreamIndex } from "./chain_source.ts";
import { type StreamHeader, TRAILER_SIZE } from "./format.ts";
import { decodeIndex, encodeIndex, type IndexedStreamIdentity } from "./index_layout.ts";
import { type IndexedRecordHeader, openStreamFile } from "./reader.ts";

/** The index file kept beside stream `path`. */
export function indexPathOf(path: string): string {
  return `${path}.idx`;
}

async function identityOf(path: string): Promise<IndexedStreamIdentity> {
  try {
    const file = await Deno.open(path, { read: true });
    try {
      const { size, mtime } = await file.stat();
      const trailer = new Uint8Array(TRAILER_SIZE);
      if (size >= TRAILER_SIZE) {
        await file.seek(size - TRAILER_SIZE, Deno.SeekMode.Start);
        for (let got = 0; got < TRAILER_SIZE;) {
          const n = await file.read(trailer.subarray(got));
          if (n === null) break;
          got += n;
        }
      }
      return { size, mtimeMs: mtime?.getTime() ?? 0, trailer };
    } finally {
      file.close();
    }
  } catch (err) {
    throw wrapError(err, SourceError, `cannot read backup stream '${path}': ${describeError(err)}`);
  }
}

async function readIndexFile(path: string): Promise<Uint8Array | null> {
  try {
    return await Deno.readFile(path);
  } catch {
    // Missing or unreadable: rebuilt either way.
    return null;
  }
}

/**
 * The index of stream file `path`: from `path.idx` when that describes the
 * file as it is, else by scanning the record headers (every one verified,
 * trailer included), then written to `path.idx` atomically. `accept` may
 * refuse the stream by its header (throwing) before any record is read.
 */
export async function indexStream(
  path: string,
  /** Told of an index rebuilt ("info") or one that could not be kept ("warning"). */
  log: Log = () => {},
  accept: (header: StreamHeader) => void = () => {},
): Promise<StreamIndex> {
  const reader = await openStreamFile(path);
  const indexPath = indexPathOf(path);
  let identity: IndexedStreamIdentity;
  try {
    accept(reader.header);
    identity = await identityOf(path);
  } catch (err) {
    await reader.close();
    throw err;
  }
  const stored = await readIndexFile(indexPath);
  if (stored) {
    const decoded = decodeIndex(stored, identity);
    if ("records" in decoded) {
      await reader.close();
      return { header: reader.header, records: decoded.records };
    }
    log("info", `rebuilding ${indexPath}: ${decoded.stale}`);
  }
  const records: IndexedRecordHeader[] = [];
  for await (const rec of reader.recordHeaders()) records.push(rec);
  try {
    await writeFileAtomic(indexPath, encodeIndex(identity, records));
  } catch (err) {
    log("warning", `cannot keep an index beside ${path} (${describeError(err)}); going on without`);
  }
  return { header: reader.header, records };
}

/** Indexes of a chain's stream files, the full first, checked to follow each other. */
export async function indexChain(paths: readonly string[], log?: Log): Promise<StreamIndex[]> {
  if (paths.length === 0) throw new UsageError("a chain needs at least its full backup stream");
  const indexes: StreamIndex[] = [];
  for (const path of paths) {
    const prev = indexes.at(-1)?.header ?? null;
    indexes.push(await indexStream(path, log, (header) => checkChainOrder(prev, header)));
  }
  return indexes;
}
