/**
 * VMware VM definitions from a VM definition: the `.vmx` of an ESXi datastore
 * VM and the hardware choices shared with the OVF descriptor (guest OS ids,
 * controller and NIC models that boot without VMware Tools). Pure
 * (docs/cross-restore.md, VMware).
 *
 * @module
 */
import { UsageError } from "../core/errors.ts";
import type { VmDefinition } from "../model/vm_definition.ts";

/** SCSI controller models the generated VMs can use. */
export const SCSI_CONTROLLERS = ["lsilogic", "lsisas1068", "pvscsi"] as const;
export type ScsiController = typeof SCSI_CONTROLLERS[number];
/** NIC models the generated VMs can use. */
export const VMWARE_NICS = ["e1000", "e1000e", "vmxnet3"] as const;
export type VmwareNic = typeof VMWARE_NICS[number];

/** Hardware choices for a VMware target. */
export interface VmwareHardware {
  controller: ScsiController;
  nic: VmwareNic;
  /** Port group / network every NIC joins. */
  network: string;
}

/** Hardware version written (ESXi 6.7 and later run it). */
export const VIRTUAL_HW_VERSION = 14;

/** Defaults that boot without VMware Tools: lsilogic+e1000 (Linux), lsisas1068+e1000e (Windows). */
export function defaultVmwareHardware(
  def: VmDefinition,
  given: { controller?: string; nic?: string; network?: string } = {},
): VmwareHardware {
  const windows = def.osFamily === "windows";
  const controller = given.controller ?? (windows ? "lsisas1068" : "lsilogic");
  const nic = given.nic ?? (windows ? "e1000e" : "e1000");
  if (!(SCSI_CONTROLLERS as readonly string[]).includes(controller)) {
    throw new UsageError((p) =>
      `restore: ${p("controller")} must be one of ${SCSI_CONTROLLERS.join(", ")}`
    );
  }
  if (!(VMWARE_NICS as readonly string[]).includes(nic)) {
    throw new UsageError((p) =>
      `restore: ${p("nic_model")} must be one of ${VMWARE_NICS.join(", ")}`
    );
  }
  return {
    controller: controller as ScsiController,
    nic: nic as VmwareNic,
    network: given.network ?? "VM Network",
  };
}

/** Guest OS ids: `.vmx` guestOS, OVF `vmw:osType`, OVF CIM `ovf:id`. */
export interface VmwareGuestIds {
  vmx: string;
  ovfOsType: string;
  cimId: number;
}

const GUESTS: readonly [RegExp, VmwareGuestIds][] = [
  [/windows.*2022/i, {
    vmx: "windows2019srvNext-64",
    ovfOsType: "windows2019srvNext_64Guest",
    cimId: 1,
  }],
  [/windows.*2019/i, { vmx: "windows2019srv-64", ovfOsType: "windows2019srv_64Guest", cimId: 1 }],
  [/windows.*2016/i, { vmx: "windows9srv-64", ovfOsType: "windows9Server64Guest", cimId: 1 }],
  [/windows.*201[02]/i, { vmx: "windows8srv-64", ovfOsType: "windows8Server64Guest", cimId: 1 }],
  [/windows/i, { vmx: "windows9-64", ovfOsType: "windows9_64Guest", cimId: 1 }],
  [/ubuntu/i, { vmx: "ubuntu-64", ovfOsType: "ubuntu64Guest", cimId: 95 }],
  [/debian/i, { vmx: "debian10-64", ovfOsType: "debian10_64Guest", cimId: 97 }],
  [/red ?hat|rhel|rocky|alma|centos|oracle/i, {
    vmx: "rhel8-64",
    ovfOsType: "rhel8_64Guest",
    cimId: 80,
  }],
];
const OTHER_LINUX: VmwareGuestIds = {
  vmx: "other4xlinux-64",
  ovfOsType: "other4xLinux64Guest",
  cimId: 101,
};

/** VMware's ids for the source OS type (Linux 64-bit "other" when unknown). */
export function vmwareGuestIds(def: VmDefinition): VmwareGuestIds {
  for (const [pattern, ids] of GUESTS) if (pattern.test(def.osType)) return ids;
  return def.osFamily === "windows" ? GUESTS[4][1] : OTHER_LINUX;
}

/** VMX string value quoting: `"` and `|` are escaped as `|22` and `|7C`. */
function vmxValue(v: string | number | boolean): string {
  const s = typeof v === "boolean" ? (v ? "TRUE" : "FALSE") : String(v);
  return `"${s.replaceAll("|", "|7C").replaceAll('"', "|22").replace(/[\r\n]/g, " ")}"`;
}

/**
 * The `.vmx` text; `diskFiles` are the descriptor names of the disks (same
 * order as `def.disks`, boot disk placed first on the controller). MACs are
 * kept (`addressType = "static"`, `checkMACAddress = "FALSE"` because they lie
 * outside VMware's static range).
 */
export function vmxConfig(def: VmDefinition, hw: VmwareHardware, diskFiles: string[]): string {
  const ids = vmwareGuestIds(def);
  const entries: [string, string | number | boolean][] = [
    [".encoding", "UTF-8"],
    ["config.version", 8],
    ["virtualHW.version", VIRTUAL_HW_VERSION],
    ["displayName", def.name],
    ["guestOS", ids.vmx],
    ["memSize", Math.ceil(def.memoryMiB / 4) * 4],
    ["numvcpus", def.cpus],
    ["firmware", def.firmware === "uefi" ? "efi" : "bios"],
    ["scsi0.present", true],
    ["scsi0.virtualDev", hw.controller],
  ];
  for (const [slot, i] of diskSlots(def).entries()) {
    entries.push(
      [`scsi0:${slot}.present`, true],
      [`scsi0:${slot}.deviceType`, "scsi-hardDisk"],
      [`scsi0:${slot}.fileName`, diskFiles[i]],
    );
  }
  def.nics.forEach((n, i) => {
    entries.push(
      [`ethernet${i}.present`, true],
      [`ethernet${i}.virtualDev`, hw.nic],
      [`ethernet${i}.networkName`, hw.network],
      [`ethernet${i}.addressType`, "static"],
      [`ethernet${i}.address`, n.mac],
      [`ethernet${i}.checkMACAddress`, false],
    );
  });
  return entries.map(([k, v]) => `${k} = ${vmxValue(v)}`).join("\n") + "\n";
}

/**
 * Disk indexes in SCSI slot order: the boot disk first, then the others in
 * device order, skipping slot 7 (the controller's own).
 */
export function diskSlots(def: VmDefinition): Map<number, number> {
  const order = def.disks.map((_, i) => i).sort((a, b) =>
    Number(def.disks[b].boot) - Number(def.disks[a].boot) ||
    def.disks[a].deviceId - def.disks[b].deviceId
  );
  const slots = new Map<number, number>();
  let slot = 0;
  for (const i of order) {
    if (slot === 7) slot++;
    slots.set(slot++, i);
  }
  return slots;
}
