import assert from "node:assert/strict";
import type { DiskState } from "../model/disk_state.ts";
import type { CbtStats } from "../cbt/layers.ts";
import { chainBreak, type DiskBackupResult, nextState, parentOf, planDiskBackup } from "./plan.ts";

const MiB = 1 << 20;
const checkpoint = { node: "drive0", incBitmap: "inc", baseBitmap: "base" };

/** A chain of one full (F) and one incremental (I1). */
const state: DiskState = {
  diskName: "vda",
  chainId: "F",
  virtualSize: 64 * MiB,
  blockSize: 65536,
  lastBackupId: "I1",
  lastFullId: "F",
  checkpoint,
  history: [
    { backupId: "F", parentId: null, level: "full", time: "t0", stream: "/b/F.dbit" },
    { backupId: "I1", parentId: "F", level: "incremental", time: "t1", stream: "/b/I1.dbit" },
  ],
};

Deno.test("parentOf: an incremental builds on the last backup, a differential on the last full", () => {
  assert.equal(parentOf("incremental", state), "I1");
  assert.equal(parentOf("differential", state), "F");
  assert.equal(parentOf("full", state), null);
  assert.equal(parentOf("incremental", null), null);
});

Deno.test("chainBreak: a resized disk breaks the chain, else the parent to check", () => {
  assert.deepEqual(chainBreak("auto", state, 128 * MiB), {
    reason: `the disk was resized from ${64 * MiB} to ${128 * MiB} bytes since backup I1`,
  });
  assert.deepEqual(chainBreak("incremental", state, 64 * MiB), { parent: state.history[1] });
  assert.deepEqual(chainBreak("auto", state, undefined), { parent: state.history[1] });
  assert.deepEqual(chainBreak("differential", state, 64 * MiB), { parent: state.history[0] });
  assert.deepEqual(chainBreak("incremental", null, 64 * MiB), {});
  const trimmed = { ...state, history: [] };
  assert.deepEqual(chainBreak("incremental", trimmed, 64 * MiB), { parent: undefined });
});

Deno.test("planDiskBackup: level and parent from the point in time, with the fallback reason", () => {
  assert.deepEqual(
    planDiskBackup("auto", { node: "n0", level: "incremental" }, "vda", state, "B"),
    { node: "n0", diskName: "vda", level: "incremental", backupId: "B", parentId: "I1" },
  );
  assert.deepEqual(
    planDiskBackup("differential", { node: "n0", level: "differential" }, "vda", state, "B")
      .parentId,
    "F",
  );
  // QEMU's reason wins: the bitmaps were gone, whatever the state says.
  assert.deepEqual(
    planDiskBackup(
      "incremental",
      { node: "n0", level: "full", reason: "bitmap lost" },
      "vda",
      state,
      "B",
    ),
    {
      node: "n0",
      diskName: "vda",
      level: "full",
      fallback: "bitmap lost",
      backupId: "B",
      parentId: null,
    },
  );
  assert.equal(
    planDiskBackup("auto", { node: "n0", level: "full" }, "vda", null, "B").fallback,
    "no previous backup of this disk in the state directory",
  );
  // A full asked for is no fallback, with or without a previous backup.
  assert.equal(
    planDiskBackup("full", { node: "n0", level: "full" }, "vda", null, "B").fallback,
    undefined,
  );
  assert.equal(
    planDiskBackup("full", { node: "n0", level: "full" }, "vda", state, "B").fallback,
    undefined,
  );
});

function written(level: DiskBackupResult["level"], backupId: string, parentId: string | null) {
  const result: DiskBackupResult = {
    node: "n0",
    diskName: "vda",
    level,
    backupId,
    parentId,
    stats: {} as CbtStats,
    streamBytes: 1,
  };
  return { result, virtualSize: 64 * MiB, blockSize: 65536 };
}

Deno.test("nextState: a full starts a chain and its history, an incremental extends them", () => {
  const now = new Date("2026-01-02T03:04:05.000Z");
  const full = nextState(state, written("full", "F2", null), checkpoint, "/b/F2.dbit", now);
  assert.deepEqual(full, {
    diskName: "vda",
    chainId: "F2",
    virtualSize: 64 * MiB,
    blockSize: 65536,
    lastBackupId: "F2",
    lastFullId: "F2",
    checkpoint,
    history: [{
      backupId: "F2",
      parentId: null,
      level: "full",
      time: "2026-01-02T03:04:05.000Z",
      stream: "/b/F2.dbit",
    }],
  });
  const inc = nextState(full, written("incremental", "I2", "F2"), checkpoint, undefined, now);
  assert.equal(inc.chainId, "F2");
  assert.equal(inc.lastFullId, "F2");
  assert.equal(inc.lastBackupId, "I2");
  assert.deepEqual(inc.history.map((r) => [r.backupId, r.parentId, r.level]), [
    ["F2", null, "full"],
    ["I2", "F2", "incremental"],
  ]);
  assert.equal("stream" in inc.history[1], false, "no stream file: none recorded");
  const diff = nextState(inc, written("differential", "D1", "F2"), checkpoint, undefined, now);
  assert.equal(diff.lastFullId, "F2");
  assert.equal(diff.history.length, 3);
});
