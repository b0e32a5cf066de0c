/**
 * `api_only`: no NBD and no SSH to the host; each volume is read through
 * CloudStack's snapshot and extract (download_backup.ts), always a full of
 * the whole volume, with a warning.
 *
 * @module
 */
import { SourceError } from "../core/errors.ts";
import { RunRecord } from "../core/run_record.ts";
import { newBackupId } from "../model/disk_state.ts";
import { JobSinks } from "../sinks/sink.ts";
import type { ApiAccessMode, VmVolumes } from "./access_mode.ts";
import { backupSnapshotByDownload, withVolumeSnapshots } from "./download_backup.ts";
import type { SinkFactory, SourceJobSettings } from "./engine.ts";
import type { DiskBackupResult } from "./plan.ts";

/** The `api_only` mode (see the module doc). */
export const apiOnlyMode: ApiAccessMode = {
  kind: "api",
  name: "api_only",
  backup: backupByDownload,
  estimate: ({ volumes }) =>
    volumes.map((volume) => ({
      diskName: volume.id,
      level: "full" as const,
      fallback: "nbd_access_mode=api_only always reads the whole volume",
      bytes: volume.size,
      lastBackupId: null,
      lastFullId: null,
    })),
};

/** Every volume's full through a snapshot and its download, one stream each, one backup id. */
async function backupByDownload(
  { client, vm, volumes }: VmVolumes,
  settings: SourceJobSettings,
  metadata: Record<string, unknown>,
  sinkFor: SinkFactory,
): Promise<DiskBackupResult[]> {
  const zoneId = vm.zoneId;
  if (!zoneId) throw new SourceError(`CloudStack shows no zone for ${vm.instanceName}`);
  const backupId = newBackupId();
  for (const volume of volumes) {
    settings.onMessage?.(
      "warning",
      `${volume.name}: nbd_access_mode=api_only reads the whole volume (${volume.size} bytes) ` +
        "through a CloudStack snapshot and download: a full backup every time, no changed-block tracking",
    );
  }
  // No lock is needed for the record: it touches only what dead runs recorded.
  const run = await RunRecord.begin(settings.stateDir);
  const sinks = new JobSinks();
  try {
    const done = await withVolumeSnapshots(
      client,
      volumes,
      settings.onMessage,
      async (snapshots) => {
        const results: DiskBackupResult[] = [];
        for (const [i, volume] of volumes.entries()) {
          const planned = {
            node: volume.id,
            diskName: volume.id,
            level: "full" as const,
            fallback: "nbd_access_mode=api_only",
            backupId,
            parentId: null,
          };
          const out = await backupSnapshotByDownload({
            client,
            volume,
            snapshotId: snapshots[i],
            zoneId,
            diskName: volume.id,
            backupId,
            compression: settings.compression,
            metadata,
            sink: async () => (await sinks.add(sinkFor(planned, run))).writable,
            signal: settings.signal,
            onMessage: settings.onMessage,
          });
          results.push({ ...planned, ...out });
        }
        return results;
      },
    );
    await sinks.commit();
    return done;
  } catch (err) {
    await sinks.discard();
    throw err;
  } finally {
    await run.end();
  }
}
