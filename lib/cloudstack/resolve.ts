/**
 * From a VM reference (UUID, name, display name or instance name) to what a
 * backup needs: state, the host's address, offering, NICs and the volumes
 * with their files in the primary storage pool, in device order. Also the
 * volume snapshot/extract calls of the `api_only` access mode.
 *
 * Resolve afresh for every job: VMs migrate between hosts.
 *
 * @module
 */
import { SourceError, UsageError } from "../core/errors.ts";
import { type ApiObject, CloudStackApiError, type CloudStackClient } from "./client.ts";

/** A NIC of the VM. */
export interface VmNic {
  id: string;
  mac: string;
  ipAddress?: string;
  networkId?: string;
  isDefault: boolean;
  deviceId?: string;
}

/** A volume of the VM and where its file lives. */
export interface VmVolume {
  id: string;
  name: string;
  type: "ROOT" | "DATADISK";
  deviceId: number;
  /** Virtual size in bytes. */
  size: number;
  /** The file name in the pool (CloudStack's `path`, not the id). */
  path: string;
  /** The disk serial CloudStack gives the guest: first 20 hex digits of the id. */
  serial: string;
  poolId: string;
  poolName: string;
  /** NetworkFilesystem, Filesystem, SharedMountPoint, RBD, ... */
  poolType: string;
  /** Path of the file on the KVM host, where the pool type has one. */
  poolPath?: string;
}

/** A resolved VM. */
export interface ResolvedVm {
  id: string;
  name: string;
  displayName: string;
  instanceName: string;
  state: string;
  zoneId?: string;
  hostId?: string;
  hostName?: string;
  /** The host's management address (listHosts `ipaddress`): its name may not resolve here. */
  hostAddress?: string;
  serviceOffering: { id?: string; name?: string; cpu: number; cpuSpeed?: number; memory: number };
  osType: { id?: string; name?: string };
  nics: VmNic[];
  volumes: VmVolume[];
}

/** Options for {@link resolveVm}. */
export interface ResolveOptions {
  /** Refuse a VM that is not Running, or has no host (default true). */
  requireRunning?: boolean;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Finds one VM by UUID, instance name (`i-2-10-VM`), name or display name,
 * exactly (CloudStack's `name=` and `keyword=` match substrings). An instance
 * name match wins over a name match, which wins over a display name match.
 */
export async function findVm(client: CloudStackClient, ref: string): Promise<ApiObject> {
  if (!ref.trim()) throw new UsageError("vm is empty: give a VM UUID, name or instance name");
  if (UUID.test(ref)) {
    let vms: ApiObject[];
    try {
      vms = await client.listAll(
        "listVirtualMachines",
        { id: ref, listall: "true" },
        "virtualmachine",
      );
    } catch (err) {
      // CloudStack answers 431 for an id that maps to no entity.
      if (err instanceof CloudStackApiError && err.errorCode === 431) vms = [];
      else throw err;
    }
    if (vms.length !== 1) {
      throw new SourceError(`VM ${ref} not found in CloudStack (or not visible to this API key)`);
    }
    return vms[0];
  }
  const candidates = await client.listAll(
    "listVirtualMachines",
    { keyword: ref, listall: "true" },
    "virtualmachine",
  );
  for (const field of ["instancename", "name", "displayname"]) {
    const hits = candidates.filter((vm) => vm[field] === ref);
    if (hits.length === 1) return hits[0];
    if (hits.length > 1) {
      throw new UsageError(
        `VM '${ref}' is ambiguous: ${hits.length} VMs have that ${field} (${
          hits.map((v) => v.id).join(", ")
        }): ` +
          "give the UUID or the instance name",
      );
    }
  }
  throw new SourceError(
    `VM '${ref}' not found in CloudStack (no exact UUID, name, display name or instance name match` +
      (candidates.length
        ? `; similar: ${candidates.slice(0, 3).map((v) => v.name).join(", ")}`
        : "") +
      ")",
  );
}

/** Resolves a VM with its host address and volumes (see {@link ResolvedVm}). */
export async function resolveVm(
  client: CloudStackClient,
  ref: string,
  options: ResolveOptions = {},
): Promise<ResolvedVm> {
  const vm = await findVm(client, ref);
  const id = str(vm.id);
  const label = `VM ${str(vm.name) || id} (${str(vm.instancename) || id})`;
  const state = str(vm.state);
  if ((options.requireRunning ?? true) && state !== "Running") {
    throw new SourceError(
      `${label} is ${state || "in an unknown state"}, not Running: start it or back it up offline`,
    );
  }
  const hostId = opt(vm.hostid);
  let hostAddress: string | undefined;
  if (hostId) {
    const hosts = await client.listAll("listHosts", { id: hostId }, "host");
    hostAddress = opt(hosts[0]?.ipaddress);
    if (!hostAddress) {
      throw new SourceError(`${label}: host ${hostId} has no ipaddress in listHosts`);
    }
  } else if (options.requireRunning ?? true) {
    throw new SourceError(
      `${label}: CloudStack shows no hostid: the API key must belong to a root admin`,
    );
  }
  if (!vm.instancename) {
    throw new SourceError(
      `${label}: CloudStack shows no instancename: the API key must belong to a root admin`,
    );
  }

  const volumes = await resolveVolumes(client, id, label);
  const nics = (Array.isArray(vm.nic) ? vm.nic as ApiObject[] : []).map((nic) => ({
    id: str(nic.id),
    mac: str(nic.macaddress),
    ipAddress: opt(nic.ipaddress),
    networkId: opt(nic.networkid),
    isDefault: nic.isdefault === true,
    deviceId: opt(nic.deviceid),
  })).sort((a, b) => Number(a.deviceId ?? 0) - Number(b.deviceId ?? 0));

  return {
    id,
    name: str(vm.name),
    displayName: str(vm.displayname) || str(vm.name),
    instanceName: str(vm.instancename),
    state,
    zoneId: opt(vm.zoneid),
    hostId,
    hostName: opt(vm.hostname),
    hostAddress,
    serviceOffering: {
      id: opt(vm.serviceofferingid),
      name: opt(vm.serviceofferingname),
      cpu: num(vm.cpunumber),
      cpuSpeed: typeof vm.cpuspeed === "number" ? vm.cpuspeed : undefined,
      memory: num(vm.memory),
    },
    osType: { id: opt(vm.ostypeid) ?? opt(vm.guestosid), name: opt(vm.osdisplayname) },
    nics,
    volumes,
  };
}

async function resolveVolumes(
  client: CloudStackClient,
  vmId: string,
  label: string,
): Promise<VmVolume[]> {
  const raw = await client.listAll(
    "listVolumes",
    { virtualmachineid: vmId, listall: "true" },
    "volume",
  );
  const pools = new Map<string, ApiObject>();
  for (const poolId of new Set(raw.map((v) => str(v.storageid)).filter(Boolean))) {
    const found = await client.listAll("listStoragePools", { id: poolId }, "storagepool");
    if (found[0]) pools.set(poolId, found[0]);
  }
  return raw.map((v) => {
    const id = str(v.id);
    const path = str(v.path);
    const poolId = str(v.storageid);
    const pool = pools.get(poolId);
    if (!path || !pool) {
      throw new SourceError(
        `${label}: volume ${id} shows no ${path ? "storage pool" : "path"}: ` +
          "the API key must belong to a root admin, and the volume must be Ready",
      );
    }
    const type = str(v.type) === "ROOT" ? "ROOT" : "DATADISK";
    const poolType = str(pool.type);
    return {
      id,
      name: str(v.name),
      type,
      deviceId: typeof v.deviceid === "number"
        ? v.deviceid
        : type === "ROOT"
        ? 0
        : Number.MAX_SAFE_INTEGER,
      size: num(v.size),
      path,
      serial: id.replaceAll("-", "").slice(0, 20),
      poolId,
      poolName: str(pool.name),
      poolType,
      poolPath: poolFilePath(poolId, poolType, str(pool.path), path),
    } satisfies VmVolume;
  }).sort((a, b) => a.deviceId - b.deviceId);
}

/**
 * Where a volume's file sits on the KVM host: NFS pools are mounted at
 * `/mnt/<pool-uuid>/`; local and shared-mount-point pools at their own path.
 */
export function poolFilePath(
  poolId: string,
  poolType: string,
  poolPath: string,
  volumePath: string,
): string | undefined {
  if (poolType === "NetworkFilesystem") return `/mnt/${poolId}/${volumePath}`;
  if ((poolType === "Filesystem" || poolType === "SharedMountPoint") && poolPath) {
    return `${poolPath.replace(/\/+$/, "")}/${volumePath}`;
  }
  return undefined;
}

/**
 * The address of a KVM host that reaches a pool's volumes, for a VM that has
 * no host (stopped): an Up host of the pool's cluster.
 */
export async function poolHostAddress(client: CloudStackClient, poolId: string): Promise<string> {
  const pool = (await client.listAll("listStoragePools", { id: poolId }, "storagepool"))[0];
  const clusterId = opt(pool?.clusterid);
  if (!clusterId) {
    throw new SourceError(
      `storage pool ${poolId} shows no cluster (a host-local pool?): start the VM to back it up`,
    );
  }
  const hosts = await client.listAll(
    "listHosts",
    { clusterid: clusterId, type: "Routing" },
    "host",
  );
  const up = hosts.find((h) => h.state === "Up" && opt(h.ipaddress));
  if (!up) {
    throw new SourceError(`no KVM host of cluster ${clusterId} is Up to read pool ${poolId}`);
  }
  return str(up.ipaddress);
}

/** createSnapshot of a volume (async); returns the snapshot id. */
export async function snapshotVolume(client: CloudStackClient, volumeId: string): Promise<string> {
  const result = await client.callAsync("createSnapshot", { volumeid: volumeId });
  return idOf(result.snapshot, "createSnapshot", "snapshot");
}

/** createVolume from a snapshot (async); returns the new volume's id. */
export async function volumeFromSnapshot(
  client: CloudStackClient,
  snapshotId: string,
  name: string,
): Promise<string> {
  const result = await client.callAsync("createVolume", { snapshotid: snapshotId, name });
  return idOf(result.volume, "createVolume", "volume");
}

/**
 * extractVolume in HTTP_DOWNLOAD mode (async); returns the download URL.
 * CloudStack extracts only detached volumes or those of stopped VMs, hence
 * the snapshot -> volume step before it for a running VM.
 */
export async function extractVolumeUrl(
  client: CloudStackClient,
  volumeId: string,
  zoneId: string,
): Promise<string> {
  const result = await client.callAsync("extractVolume", {
    id: volumeId,
    mode: "HTTP_DOWNLOAD",
    zoneid: zoneId,
  });
  const volume = result.volume as ApiObject | undefined;
  const url = opt(volume?.url);
  if (!url) throw new SourceError(`CloudStack's extractVolume of ${volumeId} returned no url`);
  return url;
}

/** deleteSnapshot (async). */
export async function deleteSnapshot(client: CloudStackClient, snapshotId: string): Promise<void> {
  await client.callAsync("deleteSnapshot", { id: snapshotId });
}

/** deleteVolume (synchronous in CloudStack). */
export async function deleteVolume(client: CloudStackClient, volumeId: string): Promise<void> {
  await client.call("deleteVolume", { id: volumeId });
}

function idOf(value: unknown, command: string, key: string): string {
  const id = typeof value === "object" && value !== null ? (value as ApiObject).id : undefined;
  if (typeof id !== "string" || !id) {
    throw new SourceError(`CloudStack's ${command} job result has no ${key} id`);
  }
  return id;
}

function str(value: unknown): string {
  return typeof value === "string" ? value : "";
}

function opt(value: unknown): string | undefined {
  return typeof value === "string" && value ? value : undefined;
}

function num(value: unknown): number {
  return typeof value === "number" ? value : Number(value ?? 0) || 0;
}
