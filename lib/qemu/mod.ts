/**
 * The QEMU layer: QMP client, checkpoints (persistent dirty bitmaps) and
 * point-in-time views exported over NBD.
 *
 * @module
 */
export {
  QmpError,
  type QmpEvent,
  QmpSocket,
  type QmpSocketOptions,
  type QmpTransport,
} from "./qmp.ts";
export { type BitmapInfo, type BlockNodeInfo, queryBlockNode } from "./blocknodes.ts";
export { bitmapNames, type DiskCheckpoint } from "./checkpoint.ts";
export { listDirtybitBitmaps, removeCheckpoint } from "./bitmaps.ts";
export {
  openPointInTime,
  type PointInTime,
  type PointInTimeDisk,
  type PointInTimeRequest,
} from "./pointintime.ts";
export { type LeftoverOptions, type Leftovers, removeLeftovers } from "./leftovers.ts";
