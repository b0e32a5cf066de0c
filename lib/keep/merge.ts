/**
 * Synthetic full: a full and its incrementals (or a differential) become one
 * full stream of the last point, without the VM. The streams are read side by
 * side in offset order (each once, each verified to its trailer), the newest
 * stream that covers a range wins, and the result goes through the stream
 * writer while a stream reader checks it as it is written. A record that
 * survives whole is copied as stored (no second compression); only records
 * a newer stream overwrites in part are cut and compressed again. Memory is one
 * record per input stream plus the writer's queue, whatever the disk size.
 *
 * The new full keeps the last point's backup id, chain id, checkpoint and
 * time, so it restores that point on its own and the chain's next incremental
 * (which names that point as its parent) applies on top of it.
 *
 * @module
 */
import { CancelledError, TargetError, UsageError } from "../core/errors.ts";
import { openForWriting } from "../core/files.ts";
import { writeAll } from "../core/bytes.ts";
import { checkChainOrder } from "../stream/chain.ts";
import type { StreamHeader, StreamHeaderInit, StreamTrailer } from "../stream/format.ts";
import type { Compression } from "../stream/compression.ts";
import { openStreamFile, StreamReader, type StreamRecord } from "../stream/reader.ts";
import { chunkReleasingSink, StreamWriter } from "../stream/writer.ts";
import { syntheticFull } from "./chains.ts";

/** What to merge and where. */
export interface MergeRequest {
  /** The full first, then its incrementals (or one differential), in chain order. */
  readonly streams: readonly string[];
  readonly out: string;
  /** Default: the last stream's compression. */
  readonly compression?: Compression;
  /** Replace an existing `out`. */
  readonly force?: boolean;
  readonly signal?: AbortSignal;
  /** Disk bytes merged so far of the disk size. */
  readonly onProgress?: (done: number, total: number) => void;
}

/** The new full as written and verified. */
export interface MergeResult {
  readonly out: string;
  readonly header: StreamHeader;
  readonly trailer: StreamTrailer;
  readonly streamBytes: number;
  /** Backup ids of the streams merged, in chain order. */
  readonly mergedFrom: readonly string[];
}

/** One input stream being read in offset order. */
interface Cursor {
  readonly header: StreamHeader;
  readonly records: AsyncGenerator<StreamRecord>;
  current: StreamRecord | null;
}

async function advance(c: Cursor, pos: number): Promise<void> {
  while (c.current && c.current.offset + c.current.length <= pos) {
    const next = await c.records.next();
    c.current = next.done ? null : next.value;
  }
}

/** The header of the synthetic full of the chain ending in `last`. */
function mergedHeader(
  last: StreamHeader,
  mergedFrom: readonly string[],
  compression: Compression,
): StreamHeaderInit {
  const { version: _, ...full } = syntheticFull(last);
  const merged = { from: mergedFrom, at: new Date().toISOString() };
  return { ...full, compression, metadata: { ...last.metadata, merged } };
}

/**
 * A sink writing to `file` that also feeds every byte to a stream reader,
 * which verifies the stream as it is written. `verified` settles when the
 * reader reached the trailer (or found a defect). A write resolves once the
 * reader asks for the chunk after it, done with it (its borrowed records end
 * there): the sink releases chunks, so the writer reuses its record buffers.
 */
function verifyingSink(file: Deno.FsFile, name: string) {
  let feed!: ReadableStreamDefaultController<Uint8Array>;
  /** Resolves the write waiting for the reader's next request; null when none waits. */
  let taken: (() => void) | null = null;
  let stopped: unknown = null;
  const toReader = new ReadableStream<Uint8Array>({
    start(controller) {
      feed = controller;
    },
    pull() {
      taken?.();
      taken = null;
    },
    cancel(reason) {
      stopped = reason ?? new Error("the verifying reader stopped");
      taken?.();
      taken = null;
    },
  }, { highWaterMark: 0 });
  const verified = (async () => {
    const reader = await StreamReader.open(toReader, name);
    for await (const _ of reader.records({ lazy: true, borrowed: true })) {
      // Reading checks every record's checksum, the order and the trailer.
    }
    return reader;
  })();
  verified.catch(() => {});
  const sink = new WritableStream<Uint8Array>({
    async write(chunk) {
      await writeAll(file, chunk);
      if (stopped) throw stopped;
      const done = new Promise<void>((resolve) => taken = resolve);
      feed.enqueue(chunk);
      await done;
      if (stopped) throw stopped;
    },
    async close() {
      await file.sync();
      if (!stopped) feed.close();
    },
    abort(reason) {
      if (!stopped) feed.error(reason);
    },
  });
  return { sink: chunkReleasingSink(sink), verified };
}

/** Merges the chain `req.streams` into a new full at `req.out`. */
export async function mergeChain(req: MergeRequest): Promise<MergeResult> {
  if (req.streams.length === 0) throw new UsageError("merge: name the full and its incrementals");
  if (req.streams.includes(req.out)) {
    throw new UsageError((p) => `merge: ${p("out")} ${req.out} is one of the streams being merged`);
  }
  if (!req.force && await Deno.stat(req.out).then(() => true, () => false)) {
    throw new TargetError((p) =>
      `${req.out} exists: choose another ${p("out")} or pass ${p("force")}`
    );
  }
  const readers: StreamReader[] = [];
  try {
    for (const path of req.streams) {
      const reader = await openStreamFile(path);
      checkChainOrder(readers.at(-1)?.header ?? null, reader.header);
      readers.push(reader);
    }
  } catch (err) {
    await Promise.all(readers.map((r) => r.records().return(undefined)));
    throw err;
  }
  const last = readers.at(-1)!.header;
  const mergedFrom = readers.map((r) => r.header.backupId);
  const partial = `${req.out}.partial`;
  const file = await openForWriting(partial, { write: true, create: true, truncate: true });
  const { sink, verified } = verifyingSink(file, `${req.out} (as written)`);
  const writer = new StreamWriter(
    sink,
    mergedHeader(last, mergedFrom, req.compression ?? last.compression),
    // Inline: most records are copied as stored, and each record worker is an isolate of its own
    // (tens of MiB), more than the few cut records need.
    { workers: 0 },
  );
  const cursors: Cursor[] = readers.map((r) => ({
    header: r.header,
    // Records copied whole are never decompressed; only cut ones are. Borrowed: a cursor's
    // record is written (copied by the writer) before the cursor moves on.
    records: r.records({ lazy: true, borrowed: true }),
    current: null,
  }));
  try {
    for (const c of cursors) {
      const first = await c.records.next();
      c.current = first.done ? null : first.value;
    }
    await copyNewest(cursors, writer, last.virtualSize, req);
    // Every input is read to its end: its trailer (totals, stream checksum) is verified too.
    for (const c of cursors) {
      while (!(await c.records.next()).done) { /* records past the disk end are refused */ }
    }
    let trailer: StreamTrailer;
    try {
      trailer = await writer.finish();
    } catch (err) {
      // The reader's own finding says more than the broken pipe it leaves behind.
      await verified;
      throw err;
    }
    const reader = await verified;
    file.close();
    await Deno.rename(partial, req.out);
    return {
      out: req.out,
      header: writer.header,
      trailer,
      streamBytes: reader.position,
      mergedFrom,
    };
  } catch (err) {
    writer.abort();
    try {
      file.close();
    } catch { /* closed already */ }
    await Deno.remove(partial).catch(() => {});
    await Promise.all(cursors.map((c) => c.records.return(undefined).catch(() => {})));
    throw err;
  }
}

/**
 * Writes `[0, size)` from the cursors (oldest first): at every offset the
 * newest stream with a record there wins; ranges no stream covers are zeros.
 */
async function copyNewest(
  cursors: Cursor[],
  writer: StreamWriter,
  size: number,
  req: MergeRequest,
): Promise<void> {
  let zeroFrom = -1;
  const flushZeros = async (to: number) => {
    if (zeroFrom >= 0) await writer.writeZero(zeroFrom, to - zeroFrom);
    zeroFrom = -1;
  };
  let reported = 0;
  for (let pos = 0; pos < size;) {
    if (req.signal?.aborted) throw new CancelledError("merge cancelled");
    for (const c of cursors) await advance(c, pos);
    let winner = -1;
    for (let i = cursors.length - 1; i >= 0; i--) {
      const r = cursors[i].current;
      if (r && r.offset <= pos) {
        winner = i;
        break;
      }
    }
    // The range ends where the winner's record ends or a newer stream's next record starts.
    let end = size;
    for (let i = winner + 1; i < cursors.length; i++) {
      const r = cursors[i].current;
      if (r) end = Math.min(end, r.offset);
    }
    const rec = winner >= 0 ? cursors[winner].current! : null;
    if (rec) end = Math.min(end, rec.offset + rec.length);
    if (rec?.kind === "data") {
      await flushZeros(pos);
      if (pos === rec.offset && end === rec.offset + rec.length) {
        await writer.copyRecord(cursors[winner].header, rec);
      } else {
        await writer.writeData(pos, rec.data.subarray(pos - rec.offset, end - rec.offset));
      }
    } else if (zeroFrom < 0) {
      zeroFrom = pos;
    }
    pos = end;
    if (req.onProgress && (pos - reported >= 64 << 20 || pos === size)) {
      reported = pos;
      req.onProgress(pos, size);
    }
  }
  await flushZeros(size);
}
