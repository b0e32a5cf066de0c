/**
 * Operator-level bitmap operations: list dirtybit's bitmaps on a disk and
 * remove a checkpoint (e.g. before forcing a new chain).
 *
 * @module
 */
import type { DiskCheckpoint } from "./checkpoint.ts";
import { type BitmapInfo, queryBlockNode } from "./blocknodes.ts";
import type { QmpTransport } from "./qmp.ts";

/** All bitmaps named `dirtybit-*` on `node` (every scope), as QEMU reports them. */
export async function listDirtybitBitmaps(
  qmp: QmpTransport,
  node: string,
): Promise<BitmapInfo[]> {
  const info = await queryBlockNode(qmp, node);
  return info.bitmaps.filter((b) => b.name.startsWith("dirtybit-"));
}

/**
 * Removes `names` from `node` in one transaction; names that do not exist
 * are skipped. Returns the names removed.
 */
export async function removeBitmaps(
  qmp: QmpTransport,
  node: string,
  names: Iterable<string>,
): Promise<string[]> {
  const present = new Set((await queryBlockNode(qmp, node)).bitmaps.map((b) => b.name));
  const remove = [...new Set(names)].filter((n) => present.has(n));
  if (remove.length > 0) {
    await qmp.execute("transaction", {
      actions: remove.map((name) => ({ type: "block-dirty-bitmap-remove", data: { node, name } })),
    });
  }
  return remove;
}

/** Removes a checkpoint's bitmaps (those that exist); the next backup of the disk is a full. */
export async function removeCheckpoint(qmp: QmpTransport, cp: DiskCheckpoint): Promise<string[]> {
  return await removeBitmaps(qmp, cp.node, [cp.incBitmap, cp.baseBitmap]);
}
