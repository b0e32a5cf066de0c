/**
 * Preflight warnings: what the VM definition says about the guest's chances
 * to boot on the target without changes inside it (docs/cross-restore.md has
 * the fixes per target). Pure.
 *
 * @module
 */
import type { VmDefinition } from "../model/vm_definition.ts";

/** The target hypervisors of a cross-restore. */
export type TargetKind = "proxmox" | "hyperv" | "vmware";

/** Options that change what the target presents to the guest. */
export interface PreflightOptions {
  /** VMware: SCSI controller model given. */
  controller?: string;
  /** VMware: NIC model given. */
  nicModel?: string;
}

/** One-line warnings for the definition restored to `target` (empty: nothing known to break). */
export function preflightWarnings(
  def: VmDefinition,
  target: TargetKind,
  options: PreflightOptions = {},
): string[] {
  const warnings: string[] = [];
  const virtio = def.disks.some((d) => d.bus === "virtio-blk" || d.bus === "virtio-scsi");
  if (target === "proxmox") return warnings;
  const windows = def.osFamily === "windows";
  if (windows && virtio) {
    const driver = target === "hyperv"
      ? def.firmware === "uefi" ? "storvsc" : "intelide/atapi"
      : options.controller === "pvscsi"
      ? "pvscsi (VMware Tools)"
      : "LSI_SAS/LSI_SCSI";
    warnings.push(
      `Windows source booted from virtio disks: the ${driver} storage driver must be boot-start ` +
        `(Start=0, no StartOverride) or it stops with INACCESSIBLE_BOOT_DEVICE; see docs/cross-restore.md`,
    );
  }
  if (
    windows && target === "vmware" &&
    (options.controller === "pvscsi" || options.nicModel === "vmxnet3")
  ) {
    warnings.push(
      "Windows has no inbox pvscsi/vmxnet3 driver: boot on lsisas1068/e1000e first, install VMware Tools, then switch",
    );
  }
  if (!windows) {
    const modules = target === "hyperv"
      ? "hv_vmbus, hv_storvsc, hv_netvsc"
      : options.controller === "pvscsi"
      ? "vmw_pvscsi"
      : "mptspi (lsilogic)";
    warnings.push(
      `Linux source: the initramfs must hold ${modules} (dracut host-only images usually do not)`,
    );
    if (def.disks.some((d) => d.bus === "virtio-blk")) {
      warnings.push(
        "Linux source used virtio-blk: /dev/vdX becomes /dev/sdX; fstab and the boot loader must " +
          "name file systems by UUID or LABEL",
      );
    }
    if (def.nics.length) {
      warnings.push(
        "NIC names change (e.g. ens3 -> eth0): network configs bound to the name, not the MAC, need updating",
      );
    }
  }
  return warnings;
}
