import assert from "node:assert/strict";
import { linuxVm, windowsVm } from "../../tests/crossrestore/sample.ts";
import { parseProperties, parseProxmoxConf } from "../../tests/crossrestore/parse.ts";
import {
  firstFreeVmid,
  proxmoxConfig,
  proxmoxDiskKeys,
  proxmoxOsType,
  proxmoxSize,
} from "./proxmox_config.ts";

Deno.test("proxmoxConfig: same bus as the source, MACs, sizes, boot order", () => {
  const conf = parseProxmoxConf(proxmoxConfig(linuxVm, {
    vmid: 123,
    storage: "local",
    bridge: "vmbr1",
    volumes: ["123/vm-123-disk-0.qcow2", "123/vm-123-disk-1.qcow2"],
  }));
  assert.equal(conf.get("name"), "web01");
  assert.equal(conf.get("cores"), "2");
  assert.equal(conf.get("sockets"), "1");
  assert.equal(conf.get("memory"), "2048");
  assert.equal(conf.get("ostype"), "l26");
  assert.equal(conf.get("scsihw"), "virtio-scsi-single");
  assert.equal(conf.get("bios"), undefined);
  const v0 = parseProperties(conf.get("virtio0")!);
  assert.equal(v0.first, "local:123/vm-123-disk-0.qcow2");
  assert.equal(v0.props.get("size"), "32G");
  const s0 = parseProperties(conf.get("scsi0")!);
  assert.equal(s0.first, "local:123/vm-123-disk-1.qcow2");
  assert.equal(s0.props.get("size"), "10241K");
  const n0 = parseProperties(conf.get("net0")!);
  assert.equal(n0.first, "virtio=02:00:4C:5E:00:01");
  assert.equal(n0.props.get("bridge"), "vmbr1");
  assert.equal(parseProperties(conf.get("net1")!).first, "e1000=1E:00:AA:BB:CC:02");
  assert.equal(conf.get("boot"), "order=virtio0;net0");
});

Deno.test("proxmoxConfig: UEFI gets OVMF, q35 and the efidisk; Windows ostype", () => {
  const conf = parseProxmoxConf(proxmoxConfig({ ...windowsVm, name: "sql" }, {
    vmid: 200,
    storage: "data",
    bridge: "vmbr0",
    volumes: ["200/vm-200-disk-0.raw"],
    efiVolume: "200/vm-200-disk-1.raw",
  }));
  assert.equal(conf.get("bios"), "ovmf");
  assert.equal(conf.get("machine"), "q35");
  const efi = parseProperties(conf.get("efidisk0")!);
  assert.equal(efi.first, "data:200/vm-200-disk-1.raw");
  assert.equal(efi.props.get("efitype"), "4m");
  assert.equal(conf.get("ostype"), "win10");
  assert.equal(parseProperties(conf.get("sata0")!).first, "data:200/vm-200-disk-0.raw");
  assert.equal(conf.get("scsihw"), undefined);
  assert.equal(conf.get("boot"), "order=sata0;net0");
});

Deno.test("proxmox helpers: sizes, disk keys, OS types, free VMIDs", () => {
  assert.equal(proxmoxSize(2 ** 40), "1T");
  assert.equal(proxmoxSize(3 * 2 ** 20), "3M");
  assert.equal(proxmoxSize(1536), "2K");
  assert.deepEqual(
    proxmoxDiskKeys([
      { ...linuxVm.disks[0] },
      { ...linuxVm.disks[0], bus: "virtio-scsi" },
      { ...linuxVm.disks[0], bus: "virtio-blk" },
      { ...linuxVm.disks[0], bus: "ide" },
    ]),
    ["virtio0", "scsi0", "virtio1", "ide0"],
  );
  assert.equal(proxmoxOsType({ ...windowsVm, osType: "Windows Server 2022" }), "win11");
  assert.equal(proxmoxOsType({ ...windowsVm, osType: "Windows Server 2012 R2" }), "win8");
  assert.equal(firstFreeVmid([]), 100);
  assert.equal(firstFreeVmid([100, 101, 103, 5]), 102);
});
