import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { parseDomainDisks } from "./libvirt.ts";

Deno.test("parseDomainDisks: the disk's own source, not its backing chain's; the empty cdrom", () => {
  const xml = `<domain><devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/>
      <source file='/mnt/p/root' index='3'/>
      <backingStore type='file' index='4'><format type='qcow2'/><source file='/mnt/p/tmpl'/><backingStore/></backingStore>
      <target dev='vda' bus='virtio'/><serial>abc&amp;d</serial><alias name='virtio-disk0'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/mnt/p/data' index='2'/>
      <backingStore/><target dev='vdb' bus='virtio'/><alias name='virtio-disk1'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu'/><target dev='hdc' bus='ide'/><readonly/><alias name='ide0-1-0'/></disk>
  </devices></domain>`;
  const disks = parseDomainDisks(xml);
  assertEquals(disks.map((d) => [d.target, d.source, d.alias]), [
    ["vda", "/mnt/p/root", "virtio-disk0"],
    ["vdb", "/mnt/p/data", "virtio-disk1"],
    ["hdc", undefined, "ide0-1-0"],
  ]);
  assertEquals(disks[0].serial, "abc&d");
});
