import assert from "node:assert/strict";
import { linuxVm, windowsVm } from "../../tests/crossrestore/sample.ts";
import { preflightWarnings } from "./preflight.ts";

Deno.test("preflight: Proxmox (KVM to KVM) needs nothing", () => {
  assert.deepEqual(preflightWarnings(linuxVm, "proxmox"), []);
});

Deno.test("preflight: Windows on virtio to Hyper-V/VMware names the boot-start driver", () => {
  const win = { ...windowsVm, disks: [{ ...windowsVm.disks[0], bus: "virtio-blk" as const }] };
  assert.match(preflightWarnings(win, "hyperv").join("\n"), /storvsc.*INACCESSIBLE_BOOT_DEVICE/);
  assert.match(preflightWarnings({ ...win, firmware: "bios" }, "hyperv").join("\n"), /intelide/);
  assert.match(preflightWarnings(win, "vmware").join("\n"), /LSI_SAS/);
  assert.match(
    preflightWarnings(windowsVm, "vmware", { nicModel: "vmxnet3" }).join("\n"),
    /VMware Tools/,
  );
  assert.deepEqual(preflightWarnings(windowsVm, "hyperv"), [], "SATA source: inbox drivers");
});

Deno.test("preflight: Linux warns about initramfs modules, device names and NIC names", () => {
  const hv = preflightWarnings(linuxVm, "hyperv").join("\n");
  assert.match(hv, /hv_vmbus, hv_storvsc, hv_netvsc/);
  assert.match(hv, /UUID/);
  assert.match(hv, /NIC names/);
  assert.match(
    preflightWarnings(linuxVm, "vmware", { controller: "pvscsi" }).join("\n"),
    /vmw_pvscsi/,
  );
});
