/**
 * Backup of a CloudStack VM named by its user: resolve the VM (afresh every
 * job: VMs migrate) -> its KVM host's address -> SSH with host-key
 * verification -> the libvirt domain (= instance name) on the host's
 * `qemu:///system` -> the same job as `backup --domain` (lib/backup/
 * domain_job.ts): libvirt's checkpoints and pull-mode backup, one point in
 * time for all selected disks, no raw monitor commands.
 *
 * A Stopped VM has no host and (CloudStack undefines it) no domain: its
 * volumes are read on primary storage through an Up KVM host of the pool's
 * cluster, offline (qemu-nbd there, over SSH), incremental from the images'
 * bitmaps where they survived (a domain that is still defined and shut off
 * keeps its libvirt checkpoints too); once it runs again in a new domain,
 * libvirt is told of those checkpoints again and the chain goes on.
 *
 * Each disk is named by its CloudStack volume id: libvirt renumbers block
 * nodes on every VM start, volume names can be changed, the id never does.
 * Every stream carries the VM definition (`metadata.vm`) so a cross-restore
 * works when the cloud is gone.
 *
 * Access modes (`nbd_access_mode`: `ssh_tunnel`, `direct`, `api_only`): one
 * file each, named in access_modes.ts, each carrying its behaviour
 * (access_mode.ts): an NBD mode tells the domain job where the running
 * domain serves its exports and how they are read; the API mode reads the
 * volumes through CloudStack itself, and the host is never reached.
 *
 * Quiesce: guest file systems are frozen through the guest agent for the
 * start of the backup job only, with the host-side thaw guard (lib/hosts). No usable
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
import {
  poolHostAddress,
  type ResolvedVm,
  resolveVm,
  type VmVolume,
} from "../cloudstack/resolve.ts";
import { SshHost, type SshTarget } from "../hosts/ssh.ts";
import { type DomainDisk, parseDomainDisks } from "../hosts/libvirt.ts";
import { SYSTEM_URI, VirshDomain } from "../hosts/virsh.ts";
import {
  type GuestAgent,
  GuestAgentUnavailableError,
  libvirtGuestAgent,
  type QuiesceOptions,
  withFrozenGuest,
} from "../hosts/guest_agent.ts";
import { vmDefinitionFromCloudStack } from "../model/vm_definition.ts";
import type { BackupJob, DiskEstimate, SinkFactory, SourceJobSettings } from "./engine.ts";
import type { DiskBackupResult } from "./plan.ts";
import { accessModeNamed } from "./access_modes.ts";
import type { ApiAccessMode, NbdAccessMode, VmVolumes } from "./access_mode.ts";
import {
  domainFacts,
  type DomainJobTarget,
  estimateDomainJob,
  imageDisk,
  runDomainJob,
} from "./domain_job.ts";
import type { ImageDisk } from "./domain_plan.ts";

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
  /** TCP port of libvirt's NBD server in direct mode (default 10809). */
  nbdPort?: number;
  /** SSH to the KVM host; `host` comes from CloudStack. */
  ssh: Omit<SshTarget, "host" | "warn">;
  /** Default true. */
  quiesce?: boolean;
  /** The guest agent of an instance (default: libvirt's, `virsh domfsfreeze`). */
  guestAgent?: (instanceName: string) => GuestAgent;
  quiesceOptions?: QuiesceOptions;
}

/**
 * Exactly the settings of a VM job: a caller may pass a wider object (the
 * Bacula backend passes its whole job, with `nodes` and `qmp`), and none of
 * that may reach the engine job this module builds.
 */
function onlySettings(s: SourceJobSettings): SourceJobSettings {
  const { level, stateDir, takeOver, checkParent, compression, metadata, streamPath } = s;
  const { signal, onMessage, onProgress } = s;
  return {
    level,
    stateDir,
    takeOver,
    checkParent,
    compression,
    metadata,
    streamPath,
    signal,
    onMessage,
    onProgress,
  };
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
  disks: DomainDisk[],
): { volume: VmVolume; disk: ImageDisk; target: string }[] {
  const images = disks.filter((d): d is ImageDisk => d.source !== undefined && d.device === "disk");
  return vm.volumes.map((volume) => {
    const disk = images.find((d) => d.serial !== undefined && d.serial === volume.serial) ??
      images.find((d) => volume.poolPath !== undefined && d.source === volume.poolPath);
    if (!disk) {
      throw new SourceError(
        `volume ${volume.name} (${volume.id}) of ${vm.instanceName} has no disk in its ` +
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

/** An open VM: resolved, with its API mode's job or the domain job on its host. */
type OpenVm = VmVolumes & ({ api: ApiAccessMode } | { target: DomainJobTarget });

async function withVm<T>(
  source: VmSource,
  settings: SourceJobSettings,
  fn: (open: OpenVm) => Promise<T>,
): Promise<T> {
  const mode = accessModeNamed(source.accessMode);
  const warn = (text: string) => settings.onMessage?.("warning", text);
  const client = new CloudStackClient(source.cloud, {
    ...source.clientOptions,
    verifySsl: source.cloud.verifySsl,
    caFile: source.cloud.caFile,
    logger: { warn },
  });
  try {
    const vm = await resolveVm(client, source.vm, { requireRunning: false });
    if (mode.kind === "api") {
      const selected = selectVolumes(
        vm.instanceName,
        vm.volumes.map((volume) => ({ volume })),
        source.disks,
      );
      return await fn({ client, vm, volumes: selected.map((s) => s.volume), api: mode });
    }
    const running = vm.state === "Running";
    if (!running && vm.state !== "Stopped") {
      throw new SourceError(
        `VM ${vm.name} (${vm.instanceName}) is ${vm.state || "in an unknown state"}: ` +
          "back it up Running or Stopped",
      );
    }
    if (running && !vm.hostAddress) {
      throw new SourceError(
        `VM ${vm.name} (${vm.instanceName}): CloudStack shows no hostid: the API key must ` +
          "belong to a root admin",
      );
    }
    const address = running
      ? vm.hostAddress!
      : await poolHostAddress(client, vm.volumes[0]?.poolId ?? "");
    const host = await SshHost.connect({ ...source.ssh, host: address, warn });
    try {
      const target = await vmTarget(source, settings, vm, host, running, mode);
      try {
        const byTarget = new Map(vm.volumes.map((v, i) => [target.names[i], v]));
        return await fn({
          client,
          vm,
          volumes: target.names.map((n) => byTarget.get(n)!),
          target,
        });
      } finally {
        await target.domain?.close();
      }
    } finally {
      await host.close();
    }
  } finally {
    client.close();
  }
}

/**
 * The domain job of the VM on its host: its running domain; when Stopped,
 * its shut-off domain if still defined, else its volumes' images on primary
 * storage.
 */
async function vmTarget(
  source: VmSource,
  settings: SourceJobSettings,
  vm: ResolvedVm,
  host: SshHost,
  running: boolean,
  mode: NbdAccessMode,
): Promise<DomainJobTarget> {
  const domain = await VirshDomain.open(host, SYSTEM_URI, vm.instanceName, {
    session: true,
  }).catch((err) => {
    if (!/is not defined/.test(err.message)) throw err;
    if (running) {
      throw new SourceError(
        `VM ${vm.instanceName} is not defined on KVM host ${host.target.host}; it may have ` +
          "migrated: resolve its host again",
      );
    }
    return undefined;
  });
  const base = {
    host: { shell: host, remote: host },
    label: vm.instanceName,
    stateDir: settings.stateDir,
  };
  if (!domain) {
    const disks = await Promise.all(vm.volumes.map((v) => {
      if (!v.poolPath) {
        throw new SourceError(
          `volume ${v.name} of stopped VM ${vm.instanceName} is on a ${v.poolType} pool, whose ` +
            "files dirtybit cannot read on a host: start the VM to back it up",
        );
      }
      return imageDisk(host, v.poolPath, v.id);
    }));
    const selected = selectVolumes(
      vm.instanceName,
      vm.volumes.map((volume, i) => ({ volume, disk: disks[i], target: undefined })),
      source.disks,
    );
    return {
      ...base,
      live: false,
      allDisks: disks,
      selected: selected.map((s) => s.disk),
      names: selected.map((s) => s.volume.id),
    };
  }
  const { live, xml, persistentXml } = domainFacts(domain);
  if (live !== running) {
    throw new SourceError(
      `CloudStack shows VM ${vm.instanceName} ${vm.state} but libvirt on ${host.target.host} ` +
        `shows it ${await domain.state()}: run the backup again once they agree`,
    );
  }
  const allDisks = parseDomainDisks(xml);
  const selected = selectVolumes(vm.instanceName, matchVolumesToDisks(vm, allDisks), source.disks);
  return {
    ...base,
    domain,
    persistentXml,
    live,
    allDisks,
    selected: selected.map((s) => s.disk),
    names: selected.map((s) => s.volume.id),
    exports: mode.exports({ address: host.target.host, nbdPort: source.nbdPort }),
    quiesce: live && (source.quiesce ?? true)
      ? quiescer(host, (source.guestAgent ?? libvirtGuestAgent)(vm.instanceName), source, settings)
      : undefined,
  };
}

/**
 * Backs up the VM's selected disks (see the module doc). Resolves only when
 * every disk's stream was written and the checkpoint committed.
 */
export function runVmBackup(
  source: VmSource,
  settings: SourceJobSettings,
  sinkFor: SinkFactory,
): Promise<DiskBackupResult[]> {
  return withVm(source, settings, (open) => {
    const metadata = vmMetadata(open.vm, settings.metadata);
    if ("api" in open) return open.api.backup(open, settings, metadata, sinkFor);
    return runDomainJob(open.target, { ...onlySettings(settings), metadata }, sinkFor);
  });
}

/** What a backup of the VM would read, without touching any bitmap. */
export function estimateVmBackup(
  source: VmSource,
  settings: SourceJobSettings,
): Promise<DiskEstimate[]> {
  return withVm(source, settings, async (open) => {
    if ("api" in open) return open.api.estimate(open);
    return await estimateDomainJob(open.target, onlySettings(settings));
  });
}

/** The engine's freeze/thaw around the point in time, on {@link withFrozenGuest}. */
function quiescer(
  host: SshHost,
  agent: GuestAgent,
  source: VmSource,
  settings: SourceJobSettings,
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
