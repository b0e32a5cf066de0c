import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert/strict";
import { SourceError, UsageError } from "../core/errors.ts";
import type { ResolvedVm, VmVolume } from "../cloudstack/resolve.ts";
import type { DomainDisk } from "../hosts/libvirt.ts";
import { matchVolumesToDisks, selectVolumes } from "./vm_job.ts";

function volume(id: string, name: string, deviceId: number, poolPath?: string): VmVolume {
  return {
    id,
    name,
    type: deviceId === 0 ? "ROOT" : "DATADISK",
    deviceId,
    size: 1 << 20,
    path: `${id}-file`,
    serial: id.replaceAll("-", "").slice(0, 20),
    poolId: "pool",
    poolName: "pool",
    poolType: "NetworkFilesystem",
    poolPath,
  };
}

function disk(target: string, serial?: string, source = `/mnt/p/${target}`): DomainDisk {
  return { type: "file", device: "disk", target, bus: "virtio", source, serial };
}

const root = volume("aaaaaaaa-1111-4000-8000-000000000001", "ROOT-10", 0);
const data = volume("bbbbbbbb-2222-4000-8000-000000000002", "DATA-10", 1, "/mnt/p/vdb");
const vm = { instanceName: "i-2-10-VM", volumes: [root, data] } as ResolvedVm;

Deno.test("volumes map to domain disks by serial, else by file path", () => {
  const mapped = matchVolumesToDisks(vm, [
    { type: "file", device: "cdrom", target: "hdc", bus: "ide" },
    disk("vdb"),
    disk("vda", root.serial, "/mnt/p/other"),
  ]);
  assertEquals(mapped.map((m) => [m.volume.name, m.target, m.disk.source]), [
    ["ROOT-10", "vda", "/mnt/p/other"],
    ["DATA-10", "vdb", "/mnt/p/vdb"],
  ]);
  assertThrows(() => matchVolumesToDisks(vm, [disk("vdb")]), SourceError);
});

Deno.test("disks= selects by name, id, device id or target, in device order", () => {
  const c = [{ volume: root, target: "vda" }, { volume: data, target: "vdb" }];
  assertEquals(selectVolumes("vm", c, undefined), c);
  assertEquals(selectVolumes("vm", c, ["vdb", "ROOT-10"]).map((x) => x.target), ["vda", "vdb"]);
  assertEquals(selectVolumes("vm", c, [data.id]).map((x) => x.target), ["vdb"]);
  assertEquals(selectVolumes("vm", c, ["0"]).map((x) => x.target), ["vda"]);
  assertThrows(() => selectVolumes("vm", c, ["vdz"]), UsageError);
});
