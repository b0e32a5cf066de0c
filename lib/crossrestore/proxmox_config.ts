/**
 * Proxmox VE VM configuration (`/etc/pve/qemu-server/<VMID>.conf`) from a VM
 * definition: same bus as the source, source MACs, OVMF + efidisk for UEFI.
 * Pure text generation (docs/cross-restore.md, Proxmox VE).
 *
 * @module
 */
import type { VmDefinition, VmDisk } from "../model/vm_definition.ts";

/** Where the restored disks live on the node. */
export interface ProxmoxLayout {
  vmid: number;
  /** Storage id of the disks, e.g. `local`. */
  storage: string;
  /** Bridge the NICs join, e.g. `vmbr0`. */
  bridge: string;
  /** Volume name of each disk (same order as `def.disks`), e.g. `100/vm-100-disk-0.qcow2`. */
  volumes: string[];
  /** Volume of the EFI vars disk (UEFI only; omitted when none was created). */
  efiVolume?: string;
}

/** Lowest VMID Proxmox hands out; below is reserved. */
export const MIN_VMID = 100;

/** Proxmox's size notation: the largest of T/G/M/K that divides, else K rounded up. */
export function proxmoxSize(bytes: number): string {
  for (const [unit, factor] of [["T", 2 ** 40], ["G", 2 ** 30], ["M", 2 ** 20]] as const) {
    if (bytes % factor === 0) return `${bytes / factor}${unit}`;
  }
  return `${Math.ceil(bytes / 1024)}K`;
}

/** Proxmox `ostype` for the source OS type. */
export function proxmoxOsType(def: VmDefinition): string {
  if (def.osFamily === "linux") return "l26";
  const t = def.osType.toLowerCase();
  if (/11|2022|2025/.test(t)) return "win11";
  if (/10|2016|2019/.test(t)) return "win10";
  if (/8|2012/.test(t)) return "win8";
  if (/7|2008/.test(t)) return "win7";
  return "win10";
}

/** The smallest free VMID at or above {@link MIN_VMID}. */
export function firstFreeVmid(used: Iterable<number>): number {
  const taken = new Set(used);
  let id = MIN_VMID;
  while (taken.has(id)) id++;
  return id;
}

/** Config key of each disk (`virtio0`, `scsi1`, `sata0`, `ide0`...), same order as `disks`. */
export function proxmoxDiskKeys(disks: readonly VmDisk[]): string[] {
  const next: Record<string, number> = { virtio: 0, scsi: 0, sata: 0, ide: 0 };
  const prefix = { "virtio-blk": "virtio", "virtio-scsi": "scsi", sata: "sata", ide: "ide" };
  return disks.map((d) => {
    const p = prefix[d.bus];
    return `${p}${next[p]++}`;
  });
}

const NIC_MODELS = new Set(["virtio", "e1000", "e1000e", "rtl8139", "vmxnet3"]);

/** The `<VMID>.conf` text. */
export function proxmoxConfig(def: VmDefinition, layout: ProxmoxLayout): string {
  const keys = proxmoxDiskKeys(def.disks);
  const lines = [
    `# restored by dirtybit from a backup of ${def.name.replace(/[\r\n]/g, " ")}`,
    `name: ${def.name}`,
    `ostype: ${proxmoxOsType(def)}`,
    `sockets: 1`,
    `cores: ${def.cpus}`,
    `memory: ${def.memoryMiB}`,
  ];
  if (def.firmware === "uefi") {
    lines.push("bios: ovmf", "machine: q35");
    if (layout.efiVolume) {
      lines.push(`efidisk0: ${layout.storage}:${layout.efiVolume},efitype=4m,size=528K`);
    }
  }
  if (def.disks.some((d) => d.bus === "virtio-scsi")) lines.push("scsihw: virtio-scsi-single");
  def.disks.forEach((d, i) => {
    const iothread = d.bus === "virtio-blk" || d.bus === "virtio-scsi" ? ",iothread=1" : "";
    lines.push(
      `${keys[i]}: ${layout.storage}:${layout.volumes[i]}${iothread},size=${proxmoxSize(d.size)}`,
    );
  });
  def.nics.forEach((n, i) => {
    const model = NIC_MODELS.has(n.model) ? n.model : "virtio";
    lines.push(`net${i}: ${model}=${n.mac.toUpperCase()},bridge=${layout.bridge}`);
  });
  const bootKey = keys[def.disks.findIndex((d) => d.boot)];
  lines.push(`boot: order=${[bootKey, ...(def.nics.length ? ["net0"] : [])].join(";")}`);
  return lines.join("\n") + "\n";
}
