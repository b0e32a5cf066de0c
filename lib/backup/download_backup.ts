/**
 * What the `api_only` access mode (access_api_only.ts) does per volume: a
 * full backup of it through CloudStack alone, for when the KVM host cannot
 * be reached. Per volume: createSnapshot -> createVolume from it
 * (CloudStack extracts only detached volumes) ->
 * extractVolume (HTTP_DOWNLOAD) -> the download streamed straight into a full
 * backup stream, never stored; the temporary volume and snapshot are deleted
 * afterwards, whatever happened. Always a full backup of the whole volume
 * (no dirty bitmap here), and the state directory is not touched: a later
 * hypervisor backup goes on with its own chain.
 *
 * Format of the download: a raw image is read front to back, block by block
 * (all-zero blocks recorded as zero extents). A qcow2 image (what a KVM
 * extract gives unless the operator configures raw) cannot be decoded from a
 * forward-only stream in general: its L2 tables and data clusters may come in
 * any order, so mapping a cluster to its guest offset needs seeking or
 * buffering up to the whole image, which the "never stored" rule forbids. It
 * is refused with a clear error.
 *
 * @module
 */
import { CancelledError, SourceError } from "../core/errors.ts";
import { isAllZero } from "../cbt/layers.ts";
import { StreamWriter } from "../stream/writer.ts";
import { MAX_RECORD_DATA } from "../stream/format.ts";
import type { CloudStackClient } from "../cloudstack/client.ts";
import {
  deleteSnapshot,
  deleteVolume,
  extractVolumeUrl,
  snapshotVolume,
  type VmVolume,
  volumeFromSnapshot,
} from "../cloudstack/resolve.ts";
import type { CbtStats } from "../cbt/layers.ts";
import type { OnMessage } from "../core/log.ts";

/** Block size of an api_only stream (the engine's usual bitmap granularity). */
export const DOWNLOAD_BLOCK_SIZE = 64 << 10;

const QCOW2_MAGIC = [0x51, 0x46, 0x49, 0xfb];

/** What one disk's download backup needs. */
export interface DownloadBackupInput {
  client: CloudStackClient;
  volume: VmVolume;
  /** The volume's snapshot (see {@link withVolumeSnapshots}). */
  snapshotId: string;
  zoneId: string;
  /** Stream header `disk`. */
  diskName: string;
  backupId: string;
  compression: string;
  metadata?: Record<string, unknown>;
  /** Called once the download has started, for the disk's sink. */
  sink: () => Promise<WritableStream<Uint8Array>>;
  signal?: AbortSignal;
  onMessage?: OnMessage;
}

/**
 * Snapshots every volume first, one right after the other (as close to one
 * point in time as CloudStack's per-volume snapshots get), runs `fn` with the
 * snapshot ids, and deletes the snapshots whatever happened.
 */
export async function withVolumeSnapshots<T>(
  client: CloudStackClient,
  volumes: VmVolume[],
  onMessage: DownloadBackupInput["onMessage"],
  fn: (snapshotIds: string[]) => Promise<T>,
): Promise<T> {
  const ids: string[] = [];
  try {
    for (const volume of volumes) ids.push(await snapshotVolume(client, volume.id));
    return await fn(ids);
  } finally {
    for (const id of ids) {
      await deleteSnapshot(client, id).catch((err) => warnLeft(onMessage, "snapshot", id, err));
    }
  }
}

/** Extracts one snapshot through a temporary volume and streams it into a full backup stream. */
export async function backupSnapshotByDownload(
  input: DownloadBackupInput,
): Promise<{ stats: CbtStats; streamBytes: number }> {
  const { client, volume } = input;
  const tempVolume = await volumeFromSnapshot(
    client,
    input.snapshotId,
    `dirtybit-${input.backupId}-${volume.deviceId}`.slice(0, 60),
  );
  try {
    const url = await extractVolumeUrl(client, tempVolume, input.zoneId);
    return await streamRawImage(await client.download(url), input);
  } finally {
    await deleteVolume(client, tempVolume).catch((err) =>
      warnLeft(input.onMessage, "volume", tempVolume, err)
    );
  }
}

function warnLeft(
  onMessage: DownloadBackupInput["onMessage"],
  what: string,
  id: string,
  err: unknown,
): void {
  onMessage?.(
    "warning",
    `removing the temporary ${what} ${id} failed: ${
      (err as Error).message
    }; remove it in CloudStack`,
  );
}

/** Reads a raw image stream of exactly `volume.size` bytes into a full backup stream. */
async function streamRawImage(
  body: ReadableStream<Uint8Array>,
  input: DownloadBackupInput,
): Promise<{ stats: CbtStats; streamBytes: number }> {
  const size = input.volume.size;
  const reader = body.getReader();
  let writer: StreamWriter | undefined;
  try {
    const stats: CbtStats = { dirtyBytes: 0, unchangedBytes: 0, zeroBytes: 0, dataBytes: 0 };
    // Whole blocks are gathered up to one record's worth before they are classified.
    const buffer = new Uint8Array(MAX_RECORD_DATA);
    let filled = 0;
    let offset = 0;
    const flush = async (final: boolean) => {
      const usable = final ? filled : filled - (filled % DOWNLOAD_BLOCK_SIZE);
      for (let at = 0; at < usable; at += DOWNLOAD_BLOCK_SIZE) {
        const block = buffer.subarray(at, Math.min(at + DOWNLOAD_BLOCK_SIZE, usable));
        stats.dirtyBytes += block.length;
        if (isAllZero(block)) {
          stats.zeroBytes += block.length;
          await writer!.writeZero(offset + at, block.length);
        } else {
          stats.dataBytes += block.length;
          await writer!.writeData(offset + at, block);
        }
      }
      buffer.copyWithin(0, usable, filled);
      filled -= usable;
      offset += usable;
    };
    for (;;) {
      if (input.signal?.aborted) throw new CancelledError("backup cancelled");
      const { value, done } = await reader.read();
      if (done) break;
      let chunk = value;
      if (!writer) {
        if (QCOW2_MAGIC.every((b, i) => chunk[i] === b)) {
          throw new SourceError(
            `extractVolume of ${input.volume.name} gave a qcow2 image, which cannot be read ` +
              "from a stream without storing it; use nbd_access_mode=ssh_tunnel or direct",
          );
        }
        writer = new StreamWriter(await input.sink(), {
          disk: input.diskName,
          virtualSize: size,
          blockSize: DOWNLOAD_BLOCK_SIZE,
          level: "full",
          backupId: input.backupId,
          parentId: null,
          chainId: input.backupId,
          checkpoint: "",
          compression: input.compression as "none",
          metadata: input.metadata,
        });
      }
      if (offset + filled + chunk.length > size) {
        throw new SourceError(
          `the download of ${input.volume.name} is larger than the volume (${size} bytes)`,
        );
      }
      while (chunk.length > 0) {
        const n = Math.min(chunk.length, buffer.length - filled);
        buffer.set(chunk.subarray(0, n), filled);
        filled += n;
        chunk = chunk.subarray(n);
        if (filled === buffer.length) await flush(false);
      }
    }
    if (offset + filled !== size) {
      throw new SourceError(
        `the download of ${input.volume.name} ended after ${offset + filled} of ${size} bytes`,
      );
    }
    if (!writer) throw new SourceError(`the download of ${input.volume.name} was empty`);
    await flush(true);
    await writer.finish();
    return { stats, streamBytes: writer.bytesWritten };
  } catch (err) {
    writer?.abort();
    await reader.cancel().catch(() => {});
    throw err;
  }
}
