/**
 * Backup of a CloudStack VM named by its user: resolve the VM (afresh every
 * job: VMs migrate) -> its KVM host's address -> SSH with host-key
 * verification -> the libvirt domain (= instance name) -> its disks' block
 * nodes -> one engine job over QMP through virsh, one point in time for all
 * selected disks.
 *
 * Each disk is named by its CloudStack volume id: libvirt renumbers block
 * nodes on every VM start, volume names can be changed, the id never does.
 * Every stream carries the VM definition (`metadata.vm`) so a cross-restore
 * works when the cloud is gone.
 *
 * Access modes (`nbd_access_mode`: `ssh_tunnel`, `direct`, `api_only`): one
 * file each, named in access_modes.ts.
 *
 * Quiesce: guest file systems are frozen through the guest agent for the
 * point in time only, with the host-side thaw guard (lib/hosts). No usable
 * agent -> a warning and a crash-consistent backup. A freeze that fails or
 * times out -> the guest is thawed and the job FAILS: the operator asked for
 * a consistent backup, and a silent crash-consistent one would hide a sick
 * agent; `quiesce=false` is the explicit way to take crash-consistent
 * backups. A thaw that fails after the point in time -> a warning, the
 * backup goes on (its data is consistent) and the guard thaws the guest.
 *
 * @module
 */
import { SourceError, UsageError, wrapError } from "../core/errors.ts";
import { CloudStackClient, type CloudStackClientOptions } from "../cloudstack/client.ts";
import type { CloudStackSettings } from "../cloudstack/credentials.ts";
import { type ResolvedVm, resolveVm, type VmVolume } from "../cloudstack/resolve.ts";
import { SshHost, type SshTarget } from "../hosts/ssh.ts";
import { type DiskNode, LibvirtDomain } from "../hosts/libvirt.ts";
import {
  type GuestAgent,
  GuestAgentUnavailableError,
  libvirtGuestAgent,
  type QuiesceOptions,
  withFrozenGuest,
} from "../hosts/guest_agent.ts";
import { QmpError } from "../qemu/qmp.ts";
import { queryExportIds } from "../qemu/blocknodes.ts";
import { isScopedTempId } from "../qemu/checkpoint.ts";
import { vmDefinitionFromCloudStack } from "../model/vm_definition.ts";
import {
  type BackupJob,
  type DiskEstimate,
  estimateBackup,
  type JobDisk,
  runBackup,
  type SinkFactory,
} from "./engine.ts";
import type { DiskBackupResult } from "./plan.ts";
import { newBackupId } from "../model/disk_state.ts";
import { RunRecord } from "../core/run_record.ts";
import type { AccessMode, DataPath } from "./access_mode.ts";
import { accessModeNamed } from "./access_modes.ts";
import { JobSinks } from "../sinks/sink.ts";
import { backupSnapshotByDownload, withVolumeSnapshots } from "./download_backup.ts";

/** Where a CloudStack VM is and how to reach it (the CloudStack parameters of a job). */
export interface VmSource {
  /** UUID, name, display name or instance name. */
  vm: string;
  cloud: CloudStackSettings;
  /** Client tuning (poll interval, timeouts); certificates come from `cloud`. */
  clientOptions?: Omit<CloudStackClientOptions, "verifySsl" | "caFile">;
  /** Subset of the volumes: names, ids, device ids or guest targets (vda); default all. */
  disks?: string[];
  /** A mode of access_modes.ts; default ssh_tunnel. */
  accessMode?: string;
  /** TCP port of QEMU's NBD server in direct mode (default 10809). */
  nbdPort?: number;
  /** SSH to the KVM host; `host` comes from CloudStack. */
  ssh: Omit<SshTarget, "host" | "warn">;
  /** Default true. */
  quiesce?: boolean;
  /** The guest agent of an instance (default: libvirt's, `virsh domfsfreeze`). */
  guestAgent?: (instanceName: string) => GuestAgent;
  quiesceOptions?: QuiesceOptions;
}

/** The engine settings of a VM job (what the source does not decide). */
export type VmJobSettings = Pick<
  BackupJob,
  | "level"
  | "stateDir"
  | "takeOver"
  | "checkParent"
  | "compression"
  | "metadata"
  | "signal"
  | "onMessage"
  | "onProgress"
>;

/**
 * Exactly the settings of a VM job: a caller may pass a wider object (the
 * Bacula backend passes its whole job, with `nodes` and `qmp`), and none of
 * that may reach the engine job this module builds.
 */
function onlySettings(s: VmJobSettings): VmJobSettings {
  const { level, stateDir, takeOver, checkParent, compression, metadata } = s;
  const { signal, onMessage, onProgress } = s;
  return {
    level,
    stateDir,
    takeOver,
    checkParent,
    compression,
    metadata,
    signal,
    onMessage,
    onProgress,
  };
}

/** Default TCP port of the NBD server in direct mode (IANA's NBD port). */
export const DEFAULT_NBD_PORT = 10809;

/** A selected volume and, on the hypervisor, its disk. */
interface SelectedDisk {
  volume: VmVolume;
  disk?: DiskNode;
}

/**
 * The volumes `wanted` names (by volume name, id, device id or guest target),
 * in device order; all when `wanted` is empty. Unknown or ambiguous names are
 * a UsageError listing the VM's volumes.
 */
export function selectVolumes<T extends { volume: VmVolume; target?: string }>(
  vmName: string,
  candidates: T[],
  wanted: readonly string[] | undefined,
): T[] {
  if (!wanted?.length) return candidates;
  const chosen = new Set<T>();
  for (const name of wanted) {
    const hits = candidates.filter((c) =>
      [c.volume.id, c.volume.name, String(c.volume.deviceId), c.target].includes(name)
    );
    if (hits.length !== 1) {
      const known = candidates.map((c) =>
        `${c.volume.name} (${c.target ? `${c.target}, ` : ""}device ${c.volume.deviceId})`
      ).join(", ");
      throw new UsageError(
        `disks: '${name}' ${hits.length ? "matches several" : "matches none"} of the volumes of ` +
          `${vmName}: ${known}; give a volume name or id`,
      );
    }
    chosen.add(hits[0]);
  }
  return candidates.filter((c) => chosen.has(c));
}

/**
 * Pairs each volume with the domain disk that is its file: by the disk
 * serial CloudStack sets, else by the file path in the pool.
 */
export function matchVolumesToDisks(
  vm: ResolvedVm,
  disks: DiskNode[],
): { volume: VmVolume; disk: DiskNode; target: string }[] {
  return vm.volumes.map((volume) => {
    const disk = disks.find((d) => d.serial !== undefined && d.serial === volume.serial) ??
      disks.find((d) => volume.poolPath !== undefined && d.source === volume.poolPath);
    if (!disk) {
      throw new SourceError(
        `volume ${volume.name} (${volume.id}) of ${vm.instanceName} has no disk in the running ` +
          `domain (no serial ${volume.serial}, no file ${volume.poolPath ?? volume.path}): ` +
          "was it attached after the VM started?",
      );
    }
    return { volume, disk, target: disk.target };
  });
}

/** Metadata of every stream of a VM backup: the caller's, plus the VM definition. */
function vmMetadata(vm: ResolvedVm, extra?: Record<string, unknown>): Record<string, unknown> {
  return {
    ...extra,
    vm: vmDefinitionFromCloudStack(vm, { diskName: (v) => v.id }),
    cloudstack: {
      vmId: vm.id,
      instanceName: vm.instanceName,
      volumes: vm.volumes.map((v) => ({
        id: v.id,
        name: v.name,
        type: v.type,
        deviceId: v.deviceId,
      })),
    },
  };
}

/** An open VM: resolved, and (except api_only) its host and domain reached. */
interface OpenVm {
  mode: AccessMode;
  client: CloudStackClient;
  vm: ResolvedVm;
  selected: SelectedDisk[];
  host?: SshHost;
  domain?: LibvirtDomain;
}

async function withVm<T>(
  source: VmSource,
  onMessage: VmJobSettings["onMessage"],
  fn: (open: OpenVm) => Promise<T>,
): Promise<T> {
  const mode = accessModeNamed(source.accessMode);
  const warn = (text: string) => onMessage?.("warning", text);
  const client = new CloudStackClient(source.cloud, {
    ...source.clientOptions,
    verifySsl: source.cloud.verifySsl,
    caFile: source.cloud.caFile,
    logger: { warn },
  });
  try {
    const vm = await resolveVm(client, source.vm);
    if (!mode.openDataPath) {
      const selected = selectVolumes(
        vm.instanceName,
        vm.volumes.map((volume) => ({ volume })),
        source.disks,
      );
      return await fn({ mode, client, vm, selected });
    }
    const host = await SshHost.connect({ ...source.ssh, host: vm.hostAddress!, warn });
    try {
      const domain = await LibvirtDomain.open(host, vm.instanceName);
      const matched = matchVolumesToDisks(vm, await domain.diskNodes());
      const selected = selectVolumes(vm.instanceName, matched, source.disks);
      return await fn({ mode, client, vm, selected, host, domain });
    } finally {
      await host.close();
    }
  } finally {
    client.close();
  }
}

/**
 * Backs up the VM's selected disks (see the module doc). Resolves only when
 * every disk's stream was written and the checkpoint committed.
 */
export function runVmBackup(
  source: VmSource,
  settings: VmJobSettings,
  sinkFor: SinkFactory,
): Promise<DiskBackupResult[]> {
  return withVm(source, settings.onMessage, (open) => {
    const metadata = vmMetadata(open.vm, settings.metadata);
    const openPath = open.mode.openDataPath;
    if (!openPath || !open.host || !open.domain) {
      return backupByDownload(open, settings, metadata, sinkFor);
    }
    return backupOnHost(source, open as Required<OpenVm>, openPath, settings, metadata, sinkFor);
  });
}

/** What a backup of the VM would read, without touching any bitmap. */
export function estimateVmBackup(
  source: VmSource,
  settings: VmJobSettings,
): Promise<DiskEstimate[]> {
  return withVm(source, settings.onMessage, async (open) => {
    if (!open.domain) {
      return open.selected.map(({ volume }) => ({
        diskName: volume.id,
        level: "full" as const,
        fallback: "nbd_access_mode=api_only always reads the whole volume",
        bytes: volume.size,
        lastBackupId: null,
        lastFullId: null,
      }));
    }
    return await estimateBackup({
      ...onlySettings(settings),
      qmp: open.domain.qmp,
      disks: jobDisks(open.selected),
    });
  });
}

function jobDisks(selected: SelectedDisk[]): JobDisk[] {
  return selected.map(({ volume, disk }) => ({ node: disk!.node, name: volume.id }));
}

async function backupOnHost(
  source: VmSource,
  { vm, host, domain, selected }: Required<OpenVm>,
  openDataPath: NonNullable<AccessMode["openDataPath"]>,
  settings: VmJobSettings,
  metadata: Record<string, unknown>,
  sinkFor: SinkFactory,
): Promise<DiskBackupResult[]> {
  await stopIdleNbdServer(domain, settings.onMessage);
  const scratch = await domain.makeScratchDir(crypto.randomUUID().slice(0, 8));
  let path: DataPath | undefined;
  try {
    path = await openDataPath(host, domain.qmp, {
      scratch,
      address: vm.hostAddress!,
      port: source.nbdPort ?? DEFAULT_NBD_PORT,
    });
    const job: BackupJob = {
      ...onlySettings(settings),
      ...path.job,
      metadata,
      qmp: domain.qmp,
      disks: jobDisks(selected),
      workDir: scratch,
      removeFile: async (path) => void await host.runChecked(["rm", "-f", "--", path]),
      quiesce: (source.quiesce ?? true)
        ? quiescer(
          host,
          (source.guestAgent ?? libvirtGuestAgent)(vm.instanceName),
          source,
          settings,
        )
        : undefined,
    };
    return await runBackup(job, sinkFor);
  } finally {
    await path?.close().catch((err) =>
      settings.onMessage?.("warning", `closing the NBD path failed: ${err.message}`)
    );
    await domain.removeScratchDir(scratch).catch((err) =>
      settings.onMessage?.("warning", `removing ${scratch} on the host failed: ${err.message}`)
    );
  }
}

/**
 * A backup killed before its cleanup leaves QEMU's NBD server running with
 * no export (its exports go with the leftovers); a new point in time could
 * not start its own. With no export at all the server serves no one: stop it.
 */
async function stopIdleNbdServer(
  domain: LibvirtDomain,
  onMessage: VmJobSettings["onMessage"],
): Promise<void> {
  const exports = await queryExportIds(domain.qmp);
  if (exports.some((id) => !isScopedTempId(id))) return;
  try {
    await domain.qmp.execute("nbd-server-stop");
    onMessage?.("warning", `stopped an NBD server left running in ${domain.name}'s QEMU`);
  } catch (err) {
    if (!(err instanceof QmpError)) throw err;
  }
}

/** The engine's freeze/thaw around the point in time, on {@link withFrozenGuest}. */
function quiescer(
  host: SshHost,
  agent: GuestAgent,
  source: VmSource,
  settings: VmJobSettings,
): NonNullable<BackupJob["quiesce"]> {
  let release: (() => void) | undefined;
  let session: Promise<void> = Promise.resolve();
  return {
    freeze: () =>
      new Promise<void>((frozen, failed) => {
        session = withFrozenGuest(host, agent, () => {
          frozen();
          return new Promise<void>((r) => (release = r));
        }, source.quiesceOptions).catch((err) => {
          if (release) throw err;
          if (err instanceof GuestAgentUnavailableError) {
            settings.onMessage?.(
              "warning",
              `${err.message}: this backup is crash-consistent, not quiesced`,
            );
            frozen();
          } else {
            failed(
              wrapError(
                err,
                SourceError,
                `${(err as Error).message}; no backup was taken: retry, or set quiesce=false ` +
                  "for a crash-consistent backup",
              ),
            );
          }
        });
      }),
    thaw: async () => {
      release?.();
      await session.catch((err) =>
        settings.onMessage?.("warning", `${err.message} (the backup itself is consistent)`)
      );
    },
  };
}

async function backupByDownload(
  { client, vm, selected }: OpenVm,
  settings: VmJobSettings,
  metadata: Record<string, unknown>,
  sinkFor: SinkFactory,
): Promise<DiskBackupResult[]> {
  const zoneId = vm.zoneId;
  if (!zoneId) throw new SourceError(`CloudStack shows no zone for ${vm.instanceName}`);
  const backupId = newBackupId();
  const volumes = selected.map((s) => s.volume);
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
