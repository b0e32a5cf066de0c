import { deepStrictEqual as assertEquals, throws } from "node:assert/strict";
import { UsageError } from "../core/errors.ts";
import type { DomainDisk } from "../hosts/libvirt.ts";
import type { DiskState } from "../model/disk_state.ts";
import {
  foreignCheckpoints,
  type ImageDisk,
  planDomainDisks,
  selectDomainDisks,
  staleCheckpoints,
} from "./domain_plan.ts";

const disk = (target: string, format = "qcow2", type = "file"): ImageDisk => ({
  type,
  device: "disk",
  target,
  bus: "virtio",
  source: `/img/${target}`,
  format,
});

function state(name: string, ids: string[], size = 1 << 20): DiskState {
  return {
    diskName: name,
    chainId: ids[0],
    virtualSize: size,
    blockSize: 65536,
    lastBackupId: ids.at(-1)!,
    lastFullId: ids[0],
    checkpoint: {
      node: name,
      incBitmap: `dirtybit-${ids.at(-1)}`,
      baseBitmap: `dirtybit-${ids[0]}`,
    },
    history: ids.map((id, i) => ({
      backupId: id,
      parentId: i ? ids[i - 1] : null,
      level: i ? "incremental" : "full",
      time: "",
    })),
  };
}

Deno.test("selectDomainDisks: images only, --disk and --exclude-disk by target or path", () => {
  const cdrom: DomainDisk = { type: "file", device: "cdrom", target: "hdc", bus: "ide" };
  const all = [disk("vda"), disk("vdb"), cdrom];
  assertEquals(selectDomainDisks("d", all).map((d) => d.target), ["vda", "vdb"]);
  assertEquals(selectDomainDisks("d", all, ["/img/vdb"]).map((d) => d.target), ["vdb"]);
  assertEquals(selectDomainDisks("d", all, [], ["vda"]).map((d) => d.target), ["vdb"]);
  throws(() => selectDomainDisks("d", all, ["vdz"]), UsageError);
  throws(() => selectDomainDisks("d", all, [], ["vda", "vdb"]), UsageError);
});

Deno.test("planDomainDisks: incremental from libvirt's checkpoint, else a full with the reason", () => {
  const cp = (name: string, targets: string[]) => ({
    name,
    bitmaps: new Map(targets.map((t) => [t, name])),
  });
  const disks = [
    disk("vda"),
    disk("vdb"),
    disk("vdc", "raw"),
    disk("vdd"),
    disk("vde"),
    disk("vdf"),
  ];
  const plans = planDomainDisks({
    disks,
    states: [
      state("vda", ["1", "2"]),
      state("vdb", ["1", "2"], 2 << 20),
      state("vdc", ["2"]),
      null,
      state("vde", ["9"]),
      state("vdf", ["1", "2"]),
    ],
    sizes: [1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20],
    checkpoints: [cp("dirtybit-1", ["vda", "vdb", "vdf"]), cp("dirtybit-2", ["vda", "vdb"])],
    requested: "incremental",
  });
  assertEquals(plans.map((p) => [p.target, p.level, p.since, p.bitmap]), [
    ["vda", "incremental", "dirtybit-2", true],
    ["vdb", "full", undefined, true],
    ["vdc", "full", undefined, false],
    ["vdd", "full", undefined, true],
    ["vde", "full", undefined, true],
    ["vdf", "full", undefined, true],
  ]);
  const reasons = plans.map((p) => p.reason ?? "");
  assertEquals(reasons[0], "");
  assertEquals(/resized/.test(reasons[1]), true);
  assertEquals(/raw image.*every backup of it is a full/.test(reasons[2]), true);
  assertEquals(/no previous backup/.test(reasons[3]), true);
  assertEquals(/libvirt has no checkpoint dirtybit-9/.test(reasons[4]), true);
  assertEquals(/has no bitmap for vdf/.test(reasons[5]), true);

  const offline = planDomainDisks({
    disks: [disk("vda")],
    states: [state("vda", ["1", "2"])],
    sizes: [1 << 20],
    checkpoints: [cp("dirtybit-1", ["vda"]), cp("dirtybit-2", ["vda"])],
    requested: "differential",
    imageBitmaps: [new Set(["dirtybit-2"])],
  });
  assertEquals(offline[0].level, "full");
  const broken = planDomainDisks({
    disks: [disk("vda")],
    states: [state("vda", ["1", "2"])],
    sizes: [1 << 20],
    checkpoints: [cp("dirtybit-2", ["vda"])],
    requested: "incremental",
    broken: ["the stream of backup 2 is gone"],
  });
  assertEquals([broken[0].level, broken[0].reason], ["full", "the stream of backup 2 is gone"]);
  assertEquals(/lost the bitmap of checkpoint dirtybit-1/.test(offline[0].reason!), true);
});

Deno.test("staleCheckpoints keeps every checkpoint of a chain in the state dir, only its owner's", () => {
  const s = (name: string, ids: string[]) => {
    const st = state(name, ids);
    st.checkpoint.incBitmap = `dirtybit-ab12-${ids.at(-1)}`;
    st.checkpoint.baseBitmap = `dirtybit-ab12-${ids[0]}`;
    return st;
  };
  assertEquals(
    staleCheckpoints(
      [0, 1, 2, 3].map((i) => `dirtybit-ab12-${i}`).concat(
        ["mine", "dirtybit-cd34-0", "dirtybit-ab12-new"],
      ),
      "ab12",
      [s("vda", ["1", "2"]), s("vdb", ["2"])],
      ["dirtybit-ab12-new"],
    ),
    ["dirtybit-ab12-0", "dirtybit-ab12-3"],
  );
});

Deno.test("foreignCheckpoints: another owner's dirtybit checkpoints on the selected disks", () => {
  const cp = (name: string, targets: string[]) => ({
    name,
    bitmaps: new Map(targets.map((t) => [t, name])),
  });
  const cps = [
    cp("dirtybit-ab12-1", ["vda"]),
    cp("dirtybit-cd34-1", ["vdb"]),
    cp("dirtybit-cd34-2", ["vdc"]),
    cp("virtnbdbackup.0", ["vda"]),
  ];
  assertEquals(foreignCheckpoints(cps, "ab12", ["vda", "vdb"]).map((c) => c.name), [
    "dirtybit-cd34-1",
  ]);
  assertEquals(foreignCheckpoints(cps, "ab12", ["vda"]), []);
});
