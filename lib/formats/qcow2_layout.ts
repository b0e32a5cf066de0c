/**
 * qcow2 v3 layout for a sequential writer (docs/interop/qcow2.txt): header,
 * L1, refcount table, refcount blocks, L2 tables, then data clusters in guest
 * order. Every table is encoded in pieces so memory stays bounded for any disk
 * size. Big-endian. Pure logic, no I/O.
 *
 * @module
 */
import { UsageError } from "../core/errors.ts";
import type { RunSet } from "./run_set.ts";
import { isPowerOfTwo } from "./writer.ts";

/** OFLAG_COPIED: "refcount is exactly one"; qemu-img check insists on it. */
const COPIED = 1n << 63n;
/** QEMU's limits (qcow2.txt): L1 at most 32 MiB, refcount table at most 8 MiB. */
const MAX_L1_BYTES = 32 << 20;
const MAX_REFTABLE_BYTES = 8 << 20;
/** Length of the v3 header we write (no optional fields). */
export const QCOW2_HEADER_LENGTH = 104;

/** Where every part of a sequential qcow2 lies; offsets in bytes, counts in clusters. */
export interface Qcow2Layout {
  readonly size: number;
  readonly clusterSize: number;
  readonly clusterBits: number;
  /** L2 entries per L2 table (= clusterSize / 8). */
  readonly l2Entries: number;
  /** L1 entries. */
  readonly l1Size: number;
  readonly l1Offset: number;
  readonly l1Clusters: number;
  readonly refcountTableOffset: number;
  readonly refcountTableClusters: number;
  readonly refcountBlocksOffset: number;
  readonly refcountBlocks: number;
  readonly l2Offset: number;
  readonly l2Tables: number;
  readonly dataOffset: number;
  readonly dataClusters: number;
  /** Clusters in the file; each has refcount 1. */
  readonly totalClusters: number;
}

/** Checks a cluster size option and returns it. */
export function checkClusterSize(clusterSize: number): number {
  if (!isPowerOfTwo(clusterSize) || clusterSize < 512 || clusterSize > 2 << 20) {
    throw new UsageError(
      `qcow2 cluster size ${clusterSize} is invalid: use a power of two from 512 to 2M`,
    );
  }
  return clusterSize;
}

/**
 * Plans the layout for a disk of `size` bytes with `dataClusters` allocated
 * clusters spread over `l2Tables` L2 tables. The refcount blocks must count
 * themselves, so their number is found by iterating to a fixed point.
 */
export function planQcow2(
  size: number,
  clusterSize: number,
  dataClusters: number,
  l2Tables: number,
): Qcow2Layout {
  checkClusterSize(clusterSize);
  const C = clusterSize;
  const l2Entries = C / 8;
  const l1Size = Math.ceil(Math.ceil(size / C) / l2Entries);
  if (l1Size * 8 > MAX_L1_BYTES) {
    throw new UsageError(
      `a ${size}-byte disk needs a qcow2 L1 table over 32 MiB with ${C}-byte clusters: use a larger cluster size`,
    );
  }
  const l1Clusters = Math.max(1, Math.ceil((l1Size * 8) / C));
  const perBlock = C / 2; // 16-bit refcounts
  let refcountBlocks = 1, refcountTableClusters = 1;
  for (;;) {
    const total = 1 + l1Clusters + refcountTableClusters + refcountBlocks + l2Tables + dataClusters;
    const rb = Math.ceil(total / perBlock);
    const rt = Math.max(1, Math.ceil((rb * 8) / C));
    if (rb === refcountBlocks && rt === refcountTableClusters) break;
    refcountBlocks = Math.max(refcountBlocks, rb);
    refcountTableClusters = Math.max(refcountTableClusters, rt);
  }
  if (refcountTableClusters * C > MAX_REFTABLE_BYTES) {
    throw new UsageError(
      `the qcow2 refcount table would exceed 8 MiB with ${C}-byte clusters: use a larger cluster size`,
    );
  }
  const l1Offset = C;
  const refcountTableOffset = l1Offset + l1Clusters * C;
  const refcountBlocksOffset = refcountTableOffset + refcountTableClusters * C;
  const l2Offset = refcountBlocksOffset + refcountBlocks * C;
  const dataOffset = l2Offset + l2Tables * C;
  return {
    size,
    clusterSize: C,
    clusterBits: Math.log2(C),
    l2Entries,
    l1Size,
    l1Offset,
    l1Clusters,
    refcountTableOffset,
    refcountTableClusters,
    refcountBlocksOffset,
    refcountBlocks,
    l2Offset,
    l2Tables,
    dataOffset,
    dataClusters,
    totalClusters: dataOffset / C + dataClusters,
  };
}

/** The v3 header plus the end-of-extensions marker (the rest of cluster 0 is zeros). */
export function encodeQcow2Header(l: Qcow2Layout): Uint8Array {
  const buf = new Uint8Array(QCOW2_HEADER_LENGTH + 8);
  const v = new DataView(buf.buffer);
  buf.set([0x51, 0x46, 0x49, 0xfb], 0); // "QFI\xfb"
  v.setUint32(4, 3);
  v.setUint32(20, l.clusterBits);
  v.setBigUint64(24, BigInt(l.size));
  v.setUint32(36, l.l1Size);
  v.setBigUint64(40, BigInt(l.l1Offset));
  v.setBigUint64(48, BigInt(l.refcountTableOffset));
  v.setUint32(56, l.refcountTableClusters);
  v.setUint32(96, 4); // refcount_order: 16-bit refcounts
  v.setUint32(100, QCOW2_HEADER_LENGTH);
  return buf; // the 8 trailing zero bytes are the end-of-extensions marker
}

/** L1 entries `[first, first+count)`: the L2 table offset of every index that has one. */
export function encodeL1(l: Qcow2Layout, l2s: RunSet, first: number, count: number): Uint8Array {
  const buf = new Uint8Array(count * 8);
  const v = new DataView(buf.buffer);
  for (const i of l2s.membersIn(first, first + count)) {
    const offset = l.l2Offset + l2s.rank(i) * l.clusterSize;
    v.setBigUint64((i - first) * 8, BigInt(offset) | COPIED);
  }
  return buf;
}

/** Refcount table entries `[first, first+count)`: offsets of the refcount blocks. */
export function encodeRefcountTable(l: Qcow2Layout, first: number, count: number): Uint8Array {
  const buf = new Uint8Array(count * 8);
  const v = new DataView(buf.buffer);
  for (let i = first; i < Math.min(first + count, l.refcountBlocks); i++) {
    v.setBigUint64((i - first) * 8, BigInt(l.refcountBlocksOffset + i * l.clusterSize));
  }
  return buf;
}

/** Refcount block `index`: refcount 1 for every cluster of the file it covers. */
export function encodeRefcountBlock(l: Qcow2Layout, index: number): Uint8Array {
  const perBlock = l.clusterSize / 2;
  const buf = new Uint8Array(l.clusterSize);
  const v = new DataView(buf.buffer);
  const first = index * perBlock;
  const n = Math.max(0, Math.min(perBlock, l.totalClusters - first));
  for (let j = 0; j < n; j++) v.setUint16(j * 2, 1);
  return buf;
}

/** The L2 table for L1 index `l1Index`: host offsets of its allocated clusters. */
export function encodeL2(l: Qcow2Layout, clusters: RunSet, l1Index: number): Uint8Array {
  const buf = new Uint8Array(l.clusterSize);
  const v = new DataView(buf.buffer);
  const first = l1Index * l.l2Entries;
  const end = first + l.l2Entries;
  for (const run of clusters.runsIn(first, end)) {
    let host = l.dataOffset + clusters.rank(run.start) * l.clusterSize;
    for (let c = run.start; c < run.end; c++, host += l.clusterSize) {
      v.setBigUint64((c - first) * 8, BigInt(host) | COPIED);
    }
  }
  return buf;
}
