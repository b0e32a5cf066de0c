import assert from "node:assert/strict";
import { linuxVm, windowsVm } from "../../tests/crossrestore/sample.ts";
import { child, children, parseXml, type XmlElement } from "../../tests/crossrestore/xml.ts";
import { ovfDescriptor } from "./ovf.ts";
import { defaultVmwareHardware } from "./vmware_config.ts";

function rasd(item: XmlElement): Record<string, string> {
  return Object.fromEntries(item.children.map((c) => [c.name.replace(/^rasd:/, ""), c.text]));
}

Deno.test("ovfDescriptor: required sections, references with sizes, hardware items", () => {
  const hw = defaultVmwareHardware(linuxVm);
  const env = parseXml(ovfDescriptor(linuxVm, hw, [
    { href: "web01-disk1.vmdk", fileSize: 1234 },
    { href: "web01-disk2.vmdk", fileSize: 99 },
  ]));
  assert.equal(env.name, "Envelope");
  assert.equal(env.attrs.xmlns, "http://schemas.dmtf.org/ovf/envelope/1");
  assert.deepEqual(env.children.map((c) => c.name), [
    "References",
    "DiskSection",
    "NetworkSection",
    "VirtualSystem",
  ]);
  const files = children(child(env, "References"), "File");
  assert.deepEqual(
    files.map((f) => [f.attrs["ovf:href"], f.attrs["ovf:id"], f.attrs["ovf:size"]]),
    [
      ["web01-disk1.vmdk", "file1", "1234"],
      ["web01-disk2.vmdk", "file2", "99"],
    ],
  );
  const disks = children(child(env, "DiskSection"), "Disk");
  assert.equal(child(child(env, "DiskSection"), "Info").text, "Virtual disk information");
  assert.deepEqual(
    disks.map((d) => [d.attrs["ovf:capacity"], d.attrs["ovf:fileRef"], d.attrs["ovf:diskId"]]),
    [
      [String(32 * 2 ** 30), "file1", "vmdisk1"],
      [String(10 * 2 ** 20 + 512), "file2", "vmdisk2"],
    ],
  );
  assert.match(disks[0].attrs["ovf:format"], /#streamOptimized$/);
  assert.equal(child(child(env, "NetworkSection"), "Network").attrs["ovf:name"], "VM Network");
  const vs = child(env, "VirtualSystem");
  assert.equal(vs.attrs["ovf:id"], "web01");
  assert.equal(child(vs, "Name").text, "web01");
  const os = child(vs, "OperatingSystemSection");
  assert.equal(os.attrs["vmw:osType"], "ubuntu64Guest");
  const vhs = child(vs, "VirtualHardwareSection");
  assert.equal(child(child(vhs, "System"), "vssd:VirtualSystemType").text, "vmx-14");
  const items = children(vhs, "Item").map(rasd);
  for (const item of children(vhs, "Item")) {
    const names = item.children.map((c) => c.name);
    assert.deepEqual(names, [...names].sort(), "rasd elements in schema (alphabetical) order");
  }
  const byType = (t: number) => items.filter((i) => i.ResourceType === String(t));
  assert.equal(byType(3)[0].VirtualQuantity, "2");
  assert.equal(byType(4)[0].VirtualQuantity, "2048");
  assert.equal(byType(4)[0].AllocationUnits, "byte * 2^20");
  const ctrl = byType(6)[0];
  assert.equal(ctrl.ResourceSubType, "lsilogic");
  const hdd = byType(17);
  assert.deepEqual(hdd.map((d) => [d.HostResource, d.Parent, d.AddressOnParent]), [
    ["ovf:/disk/vmdisk1", ctrl.InstanceID, "0"],
    ["ovf:/disk/vmdisk2", ctrl.InstanceID, "1"],
  ]);
  const nics = byType(10);
  assert.deepEqual(nics.map((n) => [n.Address, n.ResourceSubType, n.Connection]), [
    ["02:00:4c:5e:00:01", "E1000", "VM Network"],
    ["1e:00:aa:bb:cc:02", "E1000", "VM Network"],
  ]);
  const ids = items.map((i) => i.InstanceID);
  assert.equal(new Set(ids).size, ids.length, "InstanceIDs are unique");
  const cfg = child(vhs, "vmw:Config");
  assert.deepEqual([cfg.attrs["vmw:key"], cfg.attrs["vmw:value"]], ["firmware", "bios"]);
});

Deno.test("ovfDescriptor: escaping, UEFI firmware, Windows ids", () => {
  const def = { ...windowsVm, name: `a<b & "c"` };
  const env = parseXml(
    ovfDescriptor(def, defaultVmwareHardware(def), [{ href: "x.vmdk", fileSize: 1 }]),
  );
  const vs = child(env, "VirtualSystem");
  assert.equal(child(vs, "Name").text, `a<b & "c"`);
  assert.equal(child(vs, "OperatingSystemSection").attrs["vmw:osType"], "windows2019srv_64Guest");
  assert.equal(child(child(vs, "VirtualHardwareSection"), "vmw:Config").attrs["vmw:value"], "efi");
  const items = children(child(vs, "VirtualHardwareSection"), "Item").map(rasd);
  assert.equal(items.find((i) => i.ResourceType === "6")!.ResourceSubType, "lsilogicsas");
  assert.equal(items.find((i) => i.ResourceType === "10")!.ResourceSubType, "E1000e");
});
