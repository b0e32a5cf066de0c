/**
 * Backs up one disk of an open point in time: reads the extents to save over
 * NBD, passes every block through the change-detection layers (L2 hash DB,
 * L3 zero) and writes the survivors as a dirtybit stream.
 *
 * @module
 */
import { NbdClient } from "../nbd/client.ts";
import { allocationMap, BASE_ALLOCATION, dirtyExtents } from "../nbd/maps.ts";
import { readExtents } from "../nbd/reader.ts";
import { alignExtents, type Extent, totalLength } from "../core/extent.ts";
import { CancelledError } from "../core/errors.ts";
import { HashDb } from "../cbt/hashdb.ts";
import { BlockClassifier, fullBackupPlan } from "../cbt/layers.ts";
import { StreamWriter } from "../stream/writer.ts";
import { type DiskState, diskStatePaths } from "../model/disk_state.ts";
import type { DiskBackupResult, PlannedDisk } from "./plan.ts";
import { makeDirectory } from "../core/files.ts";
import type { OnMessage } from "../core/log.ts";

/** How a disk is read: NBD connections and requests in flight over them. */
export interface ReadParallelism {
  connections: number;
  inFlight: number;
}

/**
 * Against a QEMU on this machine or over TCP: two connections overlap one
 * request's latency with another's; more measured slower (2 GiB over TCP:
 * 1.2 s with 2 x 4, 1.4 s with 4 x 8).
 */
const LOCAL_READS: ReadParallelism = { connections: 2, inFlight: 4 };

/** Everything one disk's backup needs. */
export interface DiskBackupInput {
  planned: PlannedDisk;
  /** NBD URI of the point-in-time view. */
  uri: string;
  /** Meta context of the exported dirty bitmap (incremental, differential). */
  dirtyContext?: string;
  /** Dirty bitmap granularity: the block size of a new chain. */
  granularity: number;
  state: DiskState | null;
  stateDir: string;
  compression: string;
  metadata?: Record<string, unknown>;
  sink: WritableStream<Uint8Array>;
  /** Default LOCAL_READS. */
  reads?: ReadParallelism;
  signal?: AbortSignal;
  onMessage?: OnMessage;
  onProgress?: (diskName: string, done: number, total: number) => void;
}

/** A written disk stream whose hash DB update waits for the job to be accepted. */
export interface DiskBackupOutcome {
  result: DiskBackupResult;
  virtualSize: number;
  blockSize: number;
  /** Makes the staged hashes the committed ones (after the checkpoint commit). */
  commitHashes(): void;
}

/** Writes one disk's stream; on failure the sink is aborted and the hash DB left as it was. */
export async function backupDisk(input: DiskBackupInput): Promise<DiskBackupOutcome> {
  const { planned } = input;
  const contexts = [BASE_ALLOCATION, ...(input.dirtyContext ? [input.dirtyContext] : [])];
  let clients: NbdClient[] = [];
  let hashDb: HashDb | undefined;
  let writer: StreamWriter | undefined;
  try {
    const reads = input.reads ?? LOCAL_READS;
    clients = await NbdClient.connectMany(
      { uri: input.uri, metaContexts: contexts },
      reads.connections,
    );
    const size = clients[0].size;
    const blockSize = planned.level === "full" || !input.state
      ? input.granularity
      : input.state.blockSize;
    const paths = diskStatePaths(input.stateDir, planned.diskName);
    await makeDirectory(paths.dir, "the disk's state directory", { mode: 0o700 });
    hashDb = HashDb.open(paths.hashDb, {
      blockSize,
      diskSize: size,
    });
    if (hashDb.resetReason) input.onMessage?.("warning", hashDb.resetReason);
    const l2Base = planned.level === "incremental"
      ? input.state?.lastBackupId
      : planned.level === "differential"
      ? input.state?.lastFullId
      : undefined;
    const useL2 = l2Base !== undefined && hashDb.id === l2Base;
    if (l2Base !== undefined && !useL2) {
      // A differential after incrementals finds the DB of the last backup, not of
      // its full: expected, not worth a warning.
      const expected = planned.level === "differential" && hashDb.id === input.state?.lastBackupId;
      input.onMessage?.(
        expected ? "info" : "warning",
        `${planned.diskName}: hash DB does not describe backup ${l2Base}; every dirty block is stored`,
      );
    }
    const { read, unread } = await extentsToRead(
      clients[0],
      planned,
      input.dirtyContext,
      blockSize,
    );
    writer = new StreamWriter(input.sink, {
      disk: planned.diskName,
      virtualSize: size,
      blockSize,
      level: planned.level,
      backupId: planned.backupId,
      parentId: planned.parentId,
      chainId: planned.level === "full" ? planned.backupId : input.state!.chainId,
      checkpoint: planned.backupId,
      compression: input.compression as "none",
      metadata: input.metadata,
    });
    const classifier = new BlockClassifier(hashDb, { compareWithParent: useL2 });
    for (const extent of unread) classifier.stageUnread(extent);
    const total = totalLength(read);
    let done = 0;
    for await (const chunk of readExtents(clients, read, { inFlight: reads.inFlight })) {
      if (input.signal?.aborted) throw new CancelledError("backup cancelled");
      done += chunk.data.length;
      input.onProgress?.(planned.diskName, done, total);
      for (const run of classifier.classify(chunk.offset, chunk.data)) {
        if (run.kind === "data") await writer.writeData(run.offset, run.data, run.blockHashes);
        else if (run.kind === "zero") await writer.writeZero(run.offset, run.length);
      }
    }
    await writer.finish();
    const db = hashDb;
    return {
      result: { ...planned, stats: classifier.stats, streamBytes: writer.bytesWritten },
      virtualSize: size,
      blockSize,
      commitHashes: () => {
        db.commit(planned.backupId);
        db.close();
      },
    };
  } catch (err) {
    writer?.abort();
    if (!writer) await input.sink.abort(err).catch(() => {});
    hashDb?.discard();
    hashDb?.close();
    throw err;
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
}

/**
 * What to read: for a full the allocated ranges (the rest is staged as zero
 * blocks), else the dirty ranges. Block-aligned.
 */
async function extentsToRead(
  client: NbdClient,
  planned: PlannedDisk,
  dirtyContext: string | undefined,
  blockSize: number,
): Promise<{ read: Extent[]; unread: Extent[] }> {
  if (planned.level === "full" || !dirtyContext) {
    const map = allocationMap(await client.blockStatus(BASE_ALLOCATION), client.size);
    return fullBackupPlan(map, blockSize, client.size);
  }
  const dirty = dirtyExtents(await client.blockStatus(dirtyContext));
  return { read: alignExtents(dirty, blockSize, client.size), unread: [] };
}
