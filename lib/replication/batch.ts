/**
 * One batch of a seed, cycle or resync on the wire: begin, zero records, data
 * records, end, then the receiver's durable confirmation; with the NBD source
 * it reads from and the statistics it counts.
 *
 * @module
 */
import { ChainError } from "../core/errors.ts";
import { type MappedExtent, totalLength } from "../core/extent.ts";
import { NbdSource } from "../nbd/reader.ts";
import type { PointInTime } from "../qemu/mod.ts";
import { zstdCompressIfSmaller } from "../stream/zstd.ts";
import type { HashDb } from "../cbt/hashdb.ts";
import { BlockClassifier } from "../cbt/layers.ts";
import type { SecureChannel } from "./channel.ts";
import type { BeginMessage } from "./messages.ts";
import { blockPlan } from "./plan.ts";

/** Statistics of one batch or cycle. */
export interface BatchStats {
  /** Bytes of disk the batch covers (dirty ranges, or the seed window). */
  dirtyBytes: number;
  /** Of those, bytes that were read and sent as data. */
  dataBytes: number;
  /** Bytes read but not sent: equal to the replica's (layer 2, the hash DB). */
  unchangedBytes: number;
  /** Data payload bytes after compression. */
  payloadBytes: number;
  /** Bytes on the wire, frames and handshake included. */
  wireBytes: number;
  records: number;
}

/** Options of a seed, a cycle and a resync (sender.ts). */
export interface SendOptions {
  log?: (line: string) => void;
  /** Disk bytes read so far of the bytes this seed or cycle reads (after every chunk). */
  onProgress?: (done: number, total: number) => void;
  /** zstd level (default 3). */
  compressLevel?: number;
  /** Seed window per confirmed batch (default 64 MiB). */
  seedWindowBytes?: number;
  /**
   * Remove the replication bitmaps another state directory left on the disk
   * and read it whole, instead of refusing (ChainError).
   */
  takeOver?: boolean;
}

const REQUEST_BYTES = 1 << 20;
/** Hash block size when QEMU reports no bitmap granularity. */
const DEFAULT_BLOCK_BYTES = 64 << 10;

/**
 * Sends one batch — begin, zero records, data records, end — and waits for
 * the receiver's durable confirmation. Layers: whole blocks inside zero
 * ranges go as zero records unread (L3 by map); every block read is hashed
 * and staged in `db`, skipped when `compare` and equal to the replica's (L2),
 * sent as a zero record when all zero (L3), else compressed.
 */
export async function sendBatch(
  channel: SecureChannel,
  begin: BeginMessage,
  source: NbdSource,
  extents: MappedExtent[],
  db: HashDb,
  compare: boolean,
  options: SendOptions,
  meter?: ReadMeter,
): Promise<BatchStats> {
  const wireBefore = channel.bytesSent;
  const stats = emptyStats();
  stats.dirtyBytes = totalLength(extents);
  const classifier = new BlockClassifier(db, { compareWithParent: compare });
  const { read, zero } = blockPlan(extents, db.blockSize, begin.size);
  await channel.send(begin);
  let bytes = 0;
  const sendZero = async (offset: number, length: number) => {
    await channel.send({ type: "zero", offset, length });
    stats.records++;
    bytes += length;
  };
  for (const z of zero) {
    classifier.stageUnread(z);
    await sendZero(z.offset, z.length);
  }
  const level = options.compressLevel ?? 3;
  for await (const chunk of source.readExtents(read)) {
    meter?.read(chunk.data.length);
    for (const run of classifier.classify(chunk.offset, chunk.data)) {
      if (run.kind === "zero") {
        await sendZero(run.offset, run.length);
        continue;
      }
      const packed = zstdCompressIfSmaller(run.data, level);
      await channel.send({
        type: "data",
        offset: run.offset,
        length: run.length,
        codec: packed ? "zstd" : "raw",
        payload: packed ?? run.data,
      });
      stats.records++;
      bytes += run.length;
      stats.dataBytes += run.length;
      stats.payloadBytes += packed ? packed.length : run.length;
    }
  }
  stats.unchangedBytes = classifier.stats.unchangedBytes;
  await channel.send({ type: "end", records: stats.records, bytes });
  const confirm = await channel.expect("confirm");
  if (confirm.seedId !== begin.seedId || confirm.cycle !== begin.cycle) {
    throw new ChainError(`the receiver confirmed cycle ${confirm.cycle}, not ${begin.cycle}`);
  }
  stats.wireBytes = channel.bytesSent - wireBefore;
  return stats;
}

/** Counts the bytes a seed or cycle reads against its total, for `onProgress`. */
export interface ReadMeter {
  total: number;
  read(bytes: number): void;
}

/** A meter of `total` bytes reporting to `options.onProgress`. */
export function readMeter(options: SendOptions, total: number): ReadMeter {
  let done = 0;
  const meter = {
    total,
    read(bytes: number) {
      done += bytes;
      options.onProgress?.(done, meter.total);
    },
  };
  return meter;
}

/** Hash block size of a view: the bitmap granularity (whole dirty blocks). */
export function blockSizeOf(view: { granularity: number }): number {
  return view.granularity || DEFAULT_BLOCK_BYTES;
}

/** The NBD source of a point-in-time view, its dirty bitmap context included. */
export async function openSource(view: PointInTime["disks"][number]): Promise<NbdSource> {
  return await NbdSource.open(view.uri, {
    metaContexts: view.dirtyContext ? [view.dirtyContext] : [],
    // Whole hash blocks per request, so every chunk is block-aligned.
    read: { requestSize: Math.max(REQUEST_BYTES, blockSizeOf(view)) },
  });
}

/** Statistics of nothing sent yet. */
export function emptyStats(): BatchStats {
  return {
    dirtyBytes: 0,
    dataBytes: 0,
    unchangedBytes: 0,
    payloadBytes: 0,
    wireBytes: 0,
    records: 0,
  };
}

/** Adds `more` into `into`. */
export function addStats(into: BatchStats, more: BatchStats): void {
  into.dirtyBytes += more.dirtyBytes;
  into.dataBytes += more.dataBytes;
  into.unchangedBytes += more.unchangedBytes;
  into.payloadBytes += more.payloadBytes;
  into.wireBytes += more.wireBytes;
  into.records += more.records;
}
