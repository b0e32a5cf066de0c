import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import {
  backupPaths,
  backupXml,
  checkpointXml,
  domainIdentity,
  parseCheckpoint,
  restoredDomainXml,
} from "./libvirt_xml.ts";
import { parseDomainDisks } from "./libvirt.ts";

Deno.test("backupXml lists every disk: incremental, full or left out", () => {
  const xml = backupXml({ socket: "/s/dirtybit-0a/nbd.sock" }, [
    { target: "vda", mode: "incremental", since: "dirtybit-1", scratch: "/s/vda.qcow2" },
    { target: "vdb", mode: "full", scratch: "/s/vdb.qcow2" },
    { target: "vdc", mode: "no" },
  ]);
  assert(xml.includes("<server transport='unix' socket='/s/dirtybit-0a/nbd.sock'/>"));
  assert(
    xml.includes(
      "name='vda' backup='yes' type='file' exportname='vda' backupmode='incremental' " +
        "incremental='dirtybit-1' exportbitmap='dirtybit-vda'>",
    ),
  );
  assert(
    xml.includes(
      "name='vdb' backup='yes' type='file' exportname='vdb' backupmode='full'>" +
        "<scratch file='/s/vdb.qcow2'/>",
    ),
  );
  assert(xml.includes("<disk name='vdc' backup='no'/>"));
  assertEquals(backupPaths(xml), ["/s/dirtybit-0a/nbd.sock", "/s/vda.qcow2", "/s/vdb.qcow2"]);
  const tcp = backupXml({ host: "10.0.0.7", port: 10809 }, [{ target: "vda", mode: "no" }]);
  assert(tcp.includes("<server transport='tcp' name='10.0.0.7' port='10809'/>"));
  assertEquals(backupPaths(tcp), []);
});

Deno.test("checkpointXml: new, and redefined with parent and bitmaps; parseCheckpoint reads it back", () => {
  const created = checkpointXml({ name: "cp2", bitmapDisks: ["vda"], allDisks: ["vda", "vdc"] });
  assert(created.includes("<disk name='vda' checkpoint='bitmap'/>"));
  assert(created.includes("<disk name='vdc' checkpoint='no'/>"));
  assert(!created.includes("<parent>"));
  const redefined = checkpointXml({
    name: "cp2",
    bitmapDisks: ["vda"],
    allDisks: ["vda", "vdc"],
    redefine: { parent: "cp1", creationTime: 1700000000 },
  });
  const info = parseCheckpoint(redefined);
  assertEquals(info.name, "cp2");
  assertEquals(info.parent, "cp1");
  assertEquals(info.creationTime, 1700000000);
  assertEquals([...info.bitmaps], [["vda", "cp2"]]);
});

Deno.test("parseCheckpoint ignores the domain inside", () => {
  const cp = `<domaincheckpoint><name>c&amp;1</name><parent><name>c0</name></parent>
    <creationTime>5</creationTime><disks><disk name='vda' checkpoint='bitmap' bitmap='c&amp;1'/>
    <disk name='vdc' checkpoint='no'/></disks>
    <domain type='qemu'><name>dom</name><devices><disk type='file' device='disk'>
    <target dev='vdz'/></disk></devices></domain></domaincheckpoint>`;
  const info = parseCheckpoint(cp);
  assertEquals(info.name, "c&1");
  assertEquals([...info.bitmaps], [["vda", "c&1"]]);
});

Deno.test("restoredDomainXml: new name, no UUID or MAC, restored disks only", () => {
  const xml = `<domain type='kvm'>
  <name>web</name>
  <uuid>1b4e28ba-2fa1-11d2-883f-0016d3cca427</uuid>
  <devices>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native'/>
      <source dev='/dev/vg/web'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/img/web-data.qcow2'/>
      <backingStore type='file'><format type='qcow2'/><source file='/img/base.qcow2'/></backingStore>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <interface type='network'><mac address='52:54:00:aa:bb:cc'/><source network='default'/></interface>
  </devices>
</domain>`;
  const out = restoredDomainXml(xml, "web-copy", [
    { target: "vda", path: "/r/web-copy-vda.qcow2", format: "qcow2" },
  ]);
  assertEquals(domainIdentity(out), { name: "web-copy", uuid: "" });
  assert(!out.includes("52:54:00:aa:bb:cc"));
  assert(!out.includes("/img/"), "the unrestored disk and its backing file are gone");
  const disks = parseDomainDisks(out);
  assertEquals(disks.map((d) => [d.type, d.device, d.target, d.source, d.format]), [
    ["file", "disk", "vda", "/r/web-copy-vda.qcow2", "qcow2"],
    ["file", "cdrom", "hdc", undefined, "raw"],
  ]);
  assert(out.includes("cache='none' io='native'"), "driver options are kept");
});
