/**
 * The VM definition a backup keeps in its stream header (`metadata.vm`), so a
 * cross-restore can rebuild the VM on another hypervisor when the source cloud
 * is gone: CPU, memory, firmware, disks with their bus, NICs with their MACs,
 * OS type. Built from a CloudStack resolution at backup time, validated when
 * read back, and overridable from the command line.
 *
 * @module
 */
import { InputError, UsageError } from "../core/errors.ts";
import type { ResolvedVm, VmVolume } from "../cloudstack/resolve.ts";

/** Disk bus as the source hypervisor (KVM) presented it to the guest. */
export type DiskBus = "virtio-blk" | "virtio-scsi" | "ide" | "sata";
/** Source firmware. */
export type Firmware = "bios" | "uefi";
/** Guest OS family: drives driver warnings and target OS type names. */
export type OsFamily = "linux" | "windows";

/** One disk of the VM, in device order. */
export interface VmDisk {
  /** The disk name its backup streams carry (stream header `disk`). */
  name: string;
  bus: DiskBus;
  /** Device number on the source (CloudStack `deviceid`; 0 = root disk). */
  deviceId: number;
  /** Virtual size in bytes. */
  size: number;
  /** The disk the VM boots from (exactly one disk has it). */
  boot: boolean;
}

/** One NIC of the VM. */
export interface VmNic {
  /** Lower-case `aa:bb:cc:dd:ee:ff`. */
  mac: string;
  /** NIC model on the source: virtio, e1000, rtl8139, vmxnet3. */
  model: string;
}

/** What `metadata.vm` of a backup stream holds. */
export interface VmDefinition {
  name: string;
  cpus: number;
  memoryMiB: number;
  firmware: Firmware;
  /** QEMU machine type family: `pc` (i440fx) or `q35`. */
  machine: string;
  disks: VmDisk[];
  nics: VmNic[];
  /** OS type as the source names it, e.g. "Ubuntu 22.04 LTS", "Windows Server 2019 (64-bit)". */
  osType: string;
  osFamily: OsFamily;
}

/** Command-line overrides of a definition (cross-restore flags). */
export interface VmOverrides {
  name?: string;
  cpus?: number;
  memoryMiB?: number;
  firmware?: Firmware;
  osFamily?: OsFamily;
}

const BUSES: readonly DiskBus[] = ["virtio-blk", "virtio-scsi", "ide", "sata"];
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** The OS family an OS type name implies (Windows if it says so, else Linux). */
export function osFamilyOf(osType: string): OsFamily {
  return /windows|win\s?(7|8|10|11|20\d\d)/i.test(osType) ? "windows" : "linux";
}

/** CloudStack `details` controller values (`rootDiskController`, ...) mapped to a bus. */
export function busFromController(controller: string | undefined): DiskBus | undefined {
  switch (controller?.toLowerCase()) {
    case "virtio":
      return "virtio-blk";
    case "scsi":
    case "virtio-scsi":
      return "virtio-scsi";
    case "ide":
      return "ide";
    case "sata":
      return "sata";
    default:
      return undefined;
  }
}

/** Facts of a CloudStack VM that {@link ResolvedVm} does not carry. */
export interface CloudStackVmExtras {
  /** listVirtualMachines `boottype`: "BIOS" or "UEFI". */
  bootType?: string;
  /** listVirtualMachines `details` (rootDiskController, dataDiskController, nicAdapter). */
  details?: Record<string, string>;
  /** The name each volume's backup stream carries (default: the volume name). */
  diskName?: (volume: VmVolume) => string;
}

/**
 * Builds the definition of a resolved CloudStack VM. Without a controller
 * detail, Linux disks are assumed virtio-blk and Windows disks IDE: what
 * CloudStack's KVM agent picks for OS types without virtio support.
 */
export function vmDefinitionFromCloudStack(
  vm: ResolvedVm,
  extras: CloudStackVmExtras = {},
): VmDefinition {
  const osType = vm.osType.name ?? "";
  const osFamily = osFamilyOf(osType);
  const details = extras.details ?? {};
  const fallbackBus: DiskBus = osFamily === "windows" ? "ide" : "virtio-blk";
  const rootBus = busFromController(details.rootDiskController) ?? fallbackBus;
  const dataBus = busFromController(details.dataDiskController) ?? rootBus;
  const firmware: Firmware = extras.bootType?.toUpperCase() === "UEFI" ? "uefi" : "bios";
  const diskName = extras.diskName ?? ((v: VmVolume) => v.name);
  const def: VmDefinition = {
    name: vm.displayName || vm.name,
    cpus: vm.serviceOffering.cpu || 1,
    memoryMiB: vm.serviceOffering.memory || 512,
    firmware,
    machine: firmware === "uefi" ? "q35" : "pc",
    disks: vm.volumes.map((v) => ({
      name: diskName(v),
      bus: v.type === "ROOT" ? rootBus : dataBus,
      deviceId: v.deviceId,
      size: v.size,
      boot: v.type === "ROOT",
    })),
    nics: vm.nics.map((n) => ({
      mac: n.mac.toLowerCase(),
      model: (details.nicAdapter ?? "virtio").toLowerCase(),
    })),
    osType,
    osFamily,
  };
  return parseVmDefinition(def, `CloudStack VM ${vm.name}`);
}

function fail(where: string, what: string): never {
  throw new InputError(`${where}: VM definition ${what}: re-run the backup or override with flags`);
}

function positiveInt(value: unknown, where: string, field: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1) {
    fail(where, `field '${field}' must be a positive integer`);
  }
  return value;
}

function text(value: unknown, where: string, field: string): string {
  if (typeof value !== "string") fail(where, `field '${field}' must be a string`);
  return value;
}

/**
 * Validates a stored definition (`metadata.vm`) field by field; `where`
 * names its origin in errors. Exactly one disk must be the boot disk.
 */
export function parseVmDefinition(value: unknown, where: string): VmDefinition {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    fail(where, "is not a JSON object");
  }
  const o = value as Record<string, unknown>;
  const name = text(o.name, where, "name");
  if (!name.trim()) fail(where, "field 'name' is empty");
  const firmware = o.firmware;
  if (firmware !== "bios" && firmware !== "uefi") {
    fail(where, "field 'firmware' must be bios or uefi");
  }
  const osFamily = o.osFamily;
  if (osFamily !== "linux" && osFamily !== "windows") {
    fail(where, "field 'osFamily' must be linux or windows");
  }
  if (!Array.isArray(o.disks) || o.disks.length === 0) fail(where, "has no disks");
  if (!Array.isArray(o.nics)) fail(where, "field 'nics' must be an array");
  const disks = o.disks.map((d: unknown, i: number): VmDisk => {
    const r = (typeof d === "object" && d !== null ? d : {}) as Record<string, unknown>;
    if (!BUSES.includes(r.bus as DiskBus)) {
      fail(where, `disk ${i} bus must be one of ${BUSES.join(", ")}`);
    }
    if (typeof r.deviceId !== "number" || !Number.isInteger(r.deviceId) || r.deviceId < 0) {
      fail(where, `disk ${i} field 'deviceId' must be a non-negative integer`);
    }
    return {
      name: text(r.name, where, `disks[${i}].name`),
      bus: r.bus as DiskBus,
      deviceId: r.deviceId,
      size: positiveInt(r.size, where, `disks[${i}].size`),
      boot: r.boot === true,
    };
  });
  if (disks.filter((d) => d.boot).length !== 1) fail(where, "must mark exactly one boot disk");
  if (new Set(disks.map((d) => d.name)).size !== disks.length) fail(where, "names a disk twice");
  const nics = o.nics.map((n: unknown, i: number): VmNic => {
    const r = (typeof n === "object" && n !== null ? n : {}) as Record<string, unknown>;
    const mac = text(r.mac, where, `nics[${i}].mac`).toLowerCase();
    if (!MAC.test(mac)) fail(where, `nic ${i} MAC '${mac}' is not aa:bb:cc:dd:ee:ff`);
    return { mac, model: text(r.model, where, `nics[${i}].model`) };
  });
  return {
    name,
    cpus: positiveInt(o.cpus, where, "cpus"),
    memoryMiB: positiveInt(o.memoryMiB, where, "memoryMiB"),
    firmware,
    machine: typeof o.machine === "string" && o.machine ? o.machine : "pc",
    disks,
    nics,
    osType: typeof o.osType === "string" ? o.osType : "",
    osFamily,
  };
}

/** The definition with command-line overrides applied (UsageError for bad values). */
export function applyOverrides(def: VmDefinition, o: VmOverrides): VmDefinition {
  if (o.name !== undefined && !/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(o.name)) {
    throw new UsageError((p) =>
      `restore: ${p("name")} '${o.name}' must be 1-63 letters, digits, '.', '_' or '-'`
    );
  }
  const firmware = o.firmware ?? def.firmware;
  return {
    ...def,
    name: o.name ?? def.name,
    cpus: o.cpus ?? def.cpus,
    memoryMiB: o.memoryMiB ?? def.memoryMiB,
    firmware,
    machine: firmware === def.firmware ? def.machine : firmware === "uefi" ? "q35" : "pc",
    osFamily: o.osFamily ?? def.osFamily,
  };
}

/**
 * A file-name-safe form of the VM name for the target's files (CloudStack
 * display names may hold spaces and other characters).
 */
export function safeVmName(name: string): string {
  const cleaned = name.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^[-.]+|-+$/g, "");
  return cleaned.slice(0, 63) || "restored-vm";
}
