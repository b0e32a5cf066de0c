import assert from "node:assert/strict";
import { InputError, UsageError } from "../core/errors.ts";
import type { ResolvedVm } from "../cloudstack/resolve.ts";
import { linuxVm } from "../../tests/crossrestore/sample.ts";
import {
  applyOverrides,
  busFromController,
  osFamilyOf,
  parseVmDefinition,
  safeVmName,
  vmDefinitionFromCloudStack,
} from "./vm_definition.ts";

const resolved: ResolvedVm = {
  id: "0b6c1f6a-0000-4000-8000-000000000001",
  name: "web01",
  displayName: "web 01",
  instanceName: "i-2-10-VM",
  state: "Running",
  serviceOffering: { cpu: 2, memory: 2048 },
  osType: { name: "Windows Server 2019 (64-bit)" },
  nics: [{ id: "n1", mac: "02:00:4C:5E:00:01", isDefault: true, deviceId: "0" }],
  volumes: [
    {
      id: "v1",
      name: "ROOT-10",
      type: "ROOT",
      deviceId: 0,
      size: 2 ** 30,
      path: "p1",
      serial: "s",
      poolId: "pool",
      poolName: "pool",
      poolType: "NetworkFilesystem",
    },
    {
      id: "v2",
      name: "DATA-10",
      type: "DATADISK",
      deviceId: 1,
      size: 2 ** 20,
      path: "p2",
      serial: "s2",
      poolId: "pool",
      poolName: "pool",
      poolType: "NetworkFilesystem",
    },
  ],
};

Deno.test("vmDefinitionFromCloudStack: offering, MACs, boot disk, Windows defaults to IDE", () => {
  const def = vmDefinitionFromCloudStack(resolved, { bootType: "UEFI" });
  assert.equal(def.name, "web 01");
  assert.equal(def.cpus, 2);
  assert.equal(def.memoryMiB, 2048);
  assert.equal(def.firmware, "uefi");
  assert.equal(def.machine, "q35");
  assert.equal(def.osFamily, "windows");
  assert.deepEqual(def.nics, [{ mac: "02:00:4c:5e:00:01", model: "virtio" }]);
  assert.deepEqual(def.disks.map((d) => [d.name, d.bus, d.deviceId, d.boot]), [
    ["ROOT-10", "ide", 0, true],
    ["DATA-10", "ide", 1, false],
  ]);
});

Deno.test("vmDefinitionFromCloudStack: controller details and custom disk names", () => {
  const def = vmDefinitionFromCloudStack(
    { ...resolved, osType: { name: "Ubuntu 22.04" } },
    {
      details: { rootDiskController: "scsi", dataDiskController: "virtio", nicAdapter: "E1000" },
      diskName: (v) => `vol-${v.id}`,
    },
  );
  assert.equal(def.firmware, "bios");
  assert.deepEqual(def.disks.map((d) => [d.name, d.bus]), [["vol-v1", "virtio-scsi"], [
    "vol-v2",
    "virtio-blk",
  ]]);
  assert.equal(def.nics[0].model, "e1000");
});

Deno.test("parseVmDefinition round-trips JSON and rejects bad fields with InputError", () => {
  assert.deepEqual(parseVmDefinition(JSON.parse(JSON.stringify(linuxVm)), "t"), linuxVm);
  const bad = (patch: Record<string, unknown>) => parseVmDefinition({ ...linuxVm, ...patch }, "t");
  assert.throws(() => bad({ cpus: 0 }), InputError);
  assert.throws(() => bad({ firmware: "coreboot" }), /firmware/);
  assert.throws(() => bad({ disks: [] }), /no disks/);
  assert.throws(
    () => bad({ disks: linuxVm.disks.map((d) => ({ ...d, boot: true })) }),
    /exactly one boot/,
  );
  assert.throws(() => bad({ disks: [{ ...linuxVm.disks[0], bus: "nvme" }] }), /bus/);
  assert.throws(() => bad({ nics: [{ mac: "zz", model: "virtio" }] }), /MAC/);
  assert.throws(() => parseVmDefinition("x", "t"), /not a JSON object/);
});

Deno.test("applyOverrides: flags win, firmware change moves the machine type", () => {
  const def = applyOverrides(linuxVm, {
    cpus: 8,
    memoryMiB: 4096,
    firmware: "uefi",
    name: "web02",
  });
  assert.deepEqual([def.cpus, def.memoryMiB, def.firmware, def.machine, def.name], [
    8,
    4096,
    "uefi",
    "q35",
    "web02",
  ]);
  assert.equal(applyOverrides(linuxVm, {}).machine, "pc");
  assert.throws(() => applyOverrides(linuxVm, { name: "bad name" }), UsageError);
});

Deno.test("osFamilyOf, busFromController, safeVmName", () => {
  assert.equal(osFamilyOf("Windows 10 (64-bit)"), "windows");
  assert.equal(osFamilyOf("CentOS 7"), "linux");
  assert.equal(busFromController("virtio"), "virtio-blk");
  assert.equal(busFromController("osdefault"), undefined);
  assert.equal(safeVmName("sql 'prod'"), "sql-prod");
  assert.equal(safeVmName("///"), "restored-vm");
});
