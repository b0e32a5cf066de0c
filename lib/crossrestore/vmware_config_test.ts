import assert from "node:assert/strict";
import { UsageError } from "../core/errors.ts";
import { linuxVm, windowsVm } from "../../tests/crossrestore/sample.ts";
import { parseVmx } from "../../tests/crossrestore/parse.ts";
import { defaultVmwareHardware, diskSlots, vmwareGuestIds, vmxConfig } from "./vmware_config.ts";

Deno.test("vmxConfig: identity lines, CPU, memory, disks on scsi0, NICs with source MACs", () => {
  const hw = defaultVmwareHardware(linuxVm);
  assert.deepEqual(hw, { controller: "lsilogic", nic: "e1000", network: "VM Network" });
  const vmx = parseVmx(vmxConfig(linuxVm, hw, ["web01.vmdk", "web01_1.vmdk"]));
  assert.equal(vmx.get(".encoding"), "UTF-8");
  assert.equal(vmx.get("config.version"), "8");
  assert.equal(vmx.get("virtualHW.version"), "14");
  assert.equal(vmx.get("displayName"), "web01");
  assert.equal(vmx.get("guestOS"), "ubuntu-64");
  assert.equal(vmx.get("memSize"), "2048");
  assert.equal(vmx.get("numvcpus"), "2");
  assert.equal(vmx.get("firmware"), "bios");
  assert.equal(vmx.get("scsi0.present"), "TRUE");
  assert.equal(vmx.get("scsi0.virtualDev"), "lsilogic");
  assert.equal(vmx.get("scsi0:0.fileName"), "web01.vmdk");
  assert.equal(vmx.get("scsi0:1.fileName"), "web01_1.vmdk");
  assert.equal(vmx.get("ethernet0.virtualDev"), "e1000");
  assert.equal(vmx.get("ethernet0.networkName"), "VM Network");
  assert.equal(vmx.get("ethernet0.addressType"), "static");
  assert.equal(vmx.get("ethernet0.address"), "02:00:4c:5e:00:01");
  assert.equal(vmx.get("ethernet1.address"), "1e:00:aa:bb:cc:02");
  assert.equal(vmx.get("ethernet0.checkMACAddress"), "FALSE");
});

Deno.test("vmxConfig: Windows UEFI defaults (lsisas1068, e1000e, efi) and value escaping", () => {
  const hw = defaultVmwareHardware(windowsVm, { network: "Prod|LAN" });
  assert.deepEqual([hw.controller, hw.nic], ["lsisas1068", "e1000e"]);
  const vmx = parseVmx(vmxConfig({ ...windowsVm, name: 'a "quoted" name' }, hw, ["sql.vmdk"]));
  assert.equal(vmx.get("firmware"), "efi");
  assert.equal(vmx.get("guestOS"), "windows2019srv-64");
  assert.equal(vmx.get("displayName"), 'a "quoted" name');
  assert.equal(vmx.get("ethernet0.networkName"), "Prod|LAN");
  assert.equal(vmx.get("memSize"), "8192");
});

Deno.test("VMware hardware choices: pvscsi/vmxnet3 on request, bad values refused", () => {
  assert.deepEqual(defaultVmwareHardware(linuxVm, { controller: "pvscsi", nic: "vmxnet3" }), {
    controller: "pvscsi",
    nic: "vmxnet3",
    network: "VM Network",
  });
  assert.throws(() => defaultVmwareHardware(linuxVm, { controller: "buslogic" }), UsageError);
  assert.throws(() => defaultVmwareHardware(linuxVm, { nic: "rtl8139" }), UsageError);
  assert.equal(vmwareGuestIds({ ...linuxVm, osType: "Rocky Linux 9" }).vmx, "rhel8-64");
  assert.equal(vmwareGuestIds({ ...linuxVm, osType: "Arch" }).vmx, "other4xlinux-64");
});

Deno.test("diskSlots: boot disk first, slot 7 skipped", () => {
  const disks = Array.from(
    { length: 9 },
    (_, i) => ({ ...linuxVm.disks[1], name: `d${i}`, deviceId: i }),
  );
  disks[3] = { ...disks[3], boot: true };
  const slots = diskSlots({ ...linuxVm, disks });
  assert.equal(slots.get(0), 3);
  assert.equal(slots.has(7), false);
  assert.equal(slots.get(8), 7);
  assert.equal(slots.size, 9);
});
