/**
 * VM definitions shared by the cross-restore tests.
 *
 * @module
 */
import type { VmDefinition } from "../../lib/model/vm_definition.ts";

/** A BIOS Linux VM: virtio-blk root, virtio-scsi data disk, two NICs. */
export const linuxVm: VmDefinition = {
  name: "web01",
  cpus: 2,
  memoryMiB: 2048,
  firmware: "bios",
  machine: "pc",
  disks: [
    { name: "ROOT-10", bus: "virtio-blk", deviceId: 0, size: 32 * 2 ** 30, boot: true },
    { name: "DATA-10", bus: "virtio-scsi", deviceId: 1, size: 10 * 2 ** 20 + 512, boot: false },
  ],
  nics: [
    { mac: "02:00:4c:5e:00:01", model: "virtio" },
    { mac: "1e:00:aa:bb:cc:02", model: "e1000" },
  ],
  osType: "Ubuntu 22.04 LTS",
  osFamily: "linux",
};

/** A UEFI Windows VM with one IDE disk and one NIC. */
export const windowsVm: VmDefinition = {
  name: "sql 'prod'",
  cpus: 4,
  memoryMiB: 8192,
  firmware: "uefi",
  machine: "q35",
  disks: [{ name: "ROOT-11", bus: "sata", deviceId: 0, size: 64 * 2 ** 30, boot: true }],
  nics: [{ mac: "02:00:11:22:33:44", model: "e1000" }],
  osType: "Windows Server 2019 (64-bit)",
  osFamily: "windows",
};
