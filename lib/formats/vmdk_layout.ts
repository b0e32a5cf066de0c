/**
 * VMDK structures (VMware "Virtual Disk Format 5.0", QEMU block/vmdk.c,
 * libvmdk's format notes): the sparse extent header, the embedded descriptor,
 * grain tables and directories, and the stream markers of streamOptimized
 * files. Little-endian, 512-byte sectors. Pure logic, no I/O.
 *
 * @module
 */

/** 64 KiB grains (128 sectors), 512 entries per grain table: what every tool writes. */
export const GRAIN_SECTORS = 128;
export const GRAIN_SIZE = GRAIN_SECTORS * 512;
export const GTES_PER_GT = 512;
/** Bytes and sectors of one grain table. */
export const GT_BYTES = GTES_PER_GT * 4;
export const GT_SECTORS = GT_BYTES / 512;
/** The embedded descriptor: sectors 1–20. */
export const DESCRIPTOR_OFFSET = 1;
export const DESCRIPTOR_SECTORS = 20;
/** "GD at end": streamOptimized headers point to the footer for the real GD offset. */
export const GD_AT_END = 0xffffffffffffffffn;

/** Stream marker types. */
export const MarkerType = { eos: 0, gt: 1, gd: 2, footer: 3 } as const;

/** Flags: valid newline test, redundant GD, compressed grains, markers. */
const FLAG_NEWLINE_TEST = 1 << 0;
const FLAG_REDUNDANT_GD = 1 << 1;
const FLAG_COMPRESSED = 1 << 16;
const FLAG_MARKERS = 1 << 17;

/** The variable fields of a SparseExtentHeader. */
export interface SparseHeaderFields {
  /** 1 for monolithicSparse, 3 for streamOptimized (ESXi rejects lower). */
  readonly version: 1 | 3;
  /** Capacity in sectors. */
  readonly capacity: number;
  /** Sector of the redundant GD (0: none). */
  readonly rgdOffset: number;
  /** Sector of the GD, or GD_AT_END. */
  readonly gdOffset: number | bigint;
  /** Sectors before the first grain (grain-aligned). */
  readonly overHead: number;
  readonly streamOptimized: boolean;
}

/** Encodes the 512-byte SparseExtentHeader. */
export function encodeSparseHeader(h: SparseHeaderFields): Uint8Array {
  const buf = new Uint8Array(512);
  const v = new DataView(buf.buffer);
  v.setUint32(0, 0x564d444b, true); // "KDMV"
  v.setUint32(4, h.version, true);
  const flags = h.streamOptimized
    ? FLAG_NEWLINE_TEST | FLAG_COMPRESSED | FLAG_MARKERS
    : FLAG_NEWLINE_TEST | FLAG_REDUNDANT_GD;
  v.setUint32(8, flags, true);
  v.setBigUint64(12, BigInt(h.capacity), true);
  v.setBigUint64(20, BigInt(GRAIN_SECTORS), true);
  v.setBigUint64(28, BigInt(DESCRIPTOR_OFFSET), true);
  v.setBigUint64(36, BigInt(DESCRIPTOR_SECTORS), true);
  v.setUint32(44, GTES_PER_GT, true);
  v.setBigUint64(48, BigInt(h.rgdOffset), true);
  v.setBigUint64(56, BigInt(h.gdOffset), true);
  v.setBigUint64(64, BigInt(h.overHead), true);
  buf.set([0x0a, 0x20, 0x0d, 0x0a], 73); // newline detection bytes
  v.setUint16(77, h.streamOptimized ? 1 : 0, true); // compressAlgorithm: deflate
  return buf;
}

/** Grain count and grain-table count of a capacity in sectors. */
export function vmdkCounts(capacity: number): { grains: number; gts: number; gdSectors: number } {
  const grains = Math.ceil(capacity / GRAIN_SECTORS);
  const gts = Math.ceil(grains / GTES_PER_GT);
  return { grains, gts, gdSectors: Math.max(1, Math.ceil((gts * 4) / 512)) };
}

/** A random content ID (8 hex digits) as descriptors carry. */
export function randomCid(): string {
  return crypto.getRandomValues(new Uint32Array(1))[0].toString(16).padStart(8, "0");
}

/** Descriptor text for a disk of `capacity` sectors. */
export function vmdkDescriptor(opts: {
  createType: "monolithicSparse" | "streamOptimized" | "vmfs";
  capacity: number;
  extentFile: string;
  cid: string;
}): string {
  const extentType = opts.createType === "vmfs" ? "VMFS" : "SPARSE";
  const cylinders = Math.min(65535, Math.ceil(opts.capacity / (255 * 63)));
  return [
    "# Disk DescriptorFile",
    "version=1",
    'encoding="UTF-8"',
    `CID=${opts.cid}`,
    "parentCID=ffffffff",
    `createType="${opts.createType}"`,
    "",
    "# Extent description",
    `RW ${opts.capacity} ${extentType} "${opts.extentFile.replace(/"/g, "")}"`,
    "",
    "# The Disk Data Base",
    "#DDB",
    "",
    'ddb.adapterType = "lsilogic"',
    `ddb.geometry.cylinders = "${cylinders}"`,
    'ddb.geometry.heads = "255"',
    'ddb.geometry.sectors = "63"',
    `ddb.virtualHWVersion = "${opts.createType === "vmfs" ? 14 : 4}"`,
    "",
  ].join("\n");
}

/** The descriptor padded into its 20 embedded sectors (throws if it does not fit). */
export function embeddedDescriptor(text: string): Uint8Array {
  const bytes = new TextEncoder().encode(text);
  if (bytes.length > DESCRIPTOR_SECTORS * 512) {
    throw new RangeError("VMDK descriptor longer than 20 sectors: use a shorter file name");
  }
  const buf = new Uint8Array(DESCRIPTOR_SECTORS * 512);
  buf.set(bytes);
  return buf;
}

/** A metadata marker sector: `{u64 val, u32 size=0, u32 type}` and 496 zeros. */
export function encodeMarker(type: number, val: number): Uint8Array {
  const buf = new Uint8Array(512);
  const v = new DataView(buf.buffer);
  v.setBigUint64(0, BigInt(val), true);
  v.setUint32(12, type, true);
  return buf;
}

/** A grain marker `{u64 lba, u32 size}` + compressed data, padded to whole sectors. */
export function encodeGrain(lba: number, compressed: Uint8Array): Uint8Array {
  const buf = new Uint8Array(Math.ceil((12 + compressed.length) / 512) * 512);
  const v = new DataView(buf.buffer);
  v.setBigUint64(0, BigInt(lba), true);
  v.setUint32(8, compressed.length, true);
  buf.set(compressed, 12);
  return buf;
}

/** Little-endian u32 array (a GT or a GD), padded to whole sectors. */
export function encodeU32Table(entries: ArrayLike<number>): Uint8Array {
  const buf = new Uint8Array(Math.max(512, Math.ceil((entries.length * 4) / 512) * 512));
  const v = new DataView(buf.buffer);
  for (let i = 0; i < entries.length; i++) v.setUint32(i * 4, entries[i], true);
  return buf;
}

/** Layout of a monolithicSparse file: header, descriptor, redundant GD+GTs, GD+GTs, grains. */
export interface SparseLayout {
  readonly capacity: number;
  readonly gts: number;
  readonly gdSectors: number;
  readonly rgdOffset: number;
  readonly gdOffset: number;
  /** Sectors before the first grain. */
  readonly overHead: number;
}

/** Plans a monolithicSparse file of `capacity` sectors (QEMU preallocates every GT too). */
export function planSparse(capacity: number): SparseLayout {
  const { gts, gdSectors } = vmdkCounts(capacity);
  const rgdOffset = DESCRIPTOR_OFFSET + DESCRIPTOR_SECTORS;
  const gdOffset = rgdOffset + gdSectors + gts * GT_SECTORS;
  const end = gdOffset + gdSectors + gts * GT_SECTORS;
  return {
    capacity,
    gts,
    gdSectors,
    rgdOffset,
    gdOffset,
    overHead: Math.ceil(end / GRAIN_SECTORS) * GRAIN_SECTORS,
  };
}

/** The GD whose GTs follow it directly (GT t at `gdSector + gdSectors + 4t`). */
export function encodeSparseGd(l: SparseLayout, gdSector: number): Uint8Array {
  const entries = new Uint32Array(l.gts);
  for (let t = 0; t < l.gts; t++) entries[t] = gdSector + l.gdSectors + t * GT_SECTORS;
  return encodeU32Table(entries);
}

/** GT `t` of a sparse file: the sector of each allocated grain (grains stored in guest order). */
export function encodeSparseGt(
  l: SparseLayout,
  grains: { membersIn(lo: number, hi: number): Iterable<number>; rank(i: number): number },
  t: number,
): Uint8Array {
  const entries = new Uint32Array(GTES_PER_GT);
  const first = t * GTES_PER_GT;
  let rank = -1;
  for (const g of grains.membersIn(first, first + GTES_PER_GT)) {
    rank = rank < 0 ? grains.rank(g) : rank + 1;
    entries[g - first] = l.overHead + rank * GRAIN_SECTORS;
  }
  return encodeU32Table(entries);
}
