import { deepStrictEqual as assertEquals, ok as assert, throws } from "node:assert/strict";
import { SourceError } from "../core/errors.ts";
import { QmpError } from "../qemu/qmp.ts";
import { mapDiskNodes, parseDomainDisks, parseMonitorReply } from "./libvirt.ts";

Deno.test("parseDomainDisks and mapDiskNodes map by alias, skip the empty cdrom", () => {
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
  // query-block lists vdb before vda: the mapping must not depend on order.
  const blocks = [
    {
      device: "",
      qdev: "/machine/peripheral/virtio-disk1/virtio-backend",
      inserted: { "node-name": "libvirt-2-format", file: "/mnt/p/data" },
    },
    {
      device: "",
      qdev: "/machine/peripheral/virtio-disk0/virtio-backend",
      inserted: { "node-name": "libvirt-3-format", file: "/mnt/p/root" },
    },
    { device: "", qdev: "ide0-1-0" },
  ];
  const mapped = mapDiskNodes("vm", disks, blocks);
  assertEquals(mapped.map((d) => [d.target, d.node]), [["vda", "libvirt-3-format"], [
    "vdb",
    "libvirt-2-format",
  ]]);
  blocks[0].inserted!.file = "/elsewhere";
  throws(() => mapDiskNodes("vm", disks, blocks), SourceError);
  assert(mapDiskNodes("vm", disks.slice(2), blocks).length === 0, "an empty cdrom maps to nothing");
});

Deno.test("parseMonitorReply returns QMP's return or throws QEMU's error", () => {
  assertEquals(
    parseMonitorReply("query-status", '{"return":{"status":"running"},"id":"libvirt-4"}'),
    {
      status: "running",
    },
  );
  throws(
    () =>
      parseMonitorReply(
        "block-dirty-bitmap-remove",
        '{"id":"libvirt-413","error":{"class":"GenericError","desc":"Node \'nope\' not found"}}',
      ),
    (e: unknown) => e instanceof QmpError && e.message.includes("Node 'nope' not found"),
  );
  throws(() => parseMonitorReply("x", "error: not json"), SourceError);
});
