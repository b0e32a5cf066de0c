/**
 * VHD (qemu's `vpc`) structures from Microsoft's "Virtual Hard Disk Image
 * Format Specification" v1.0: the 512-byte footer, the dynamic disk header,
 * the BAT and the CHS geometry algorithm. Big-endian. Pure logic, no I/O.
 *
 * @module
 */
import { UsageError } from "../core/errors.ts";

/** Dynamic VHD block size: the only one Microsoft's parser reads. */
export const VHD_BLOCK_SIZE = 2 << 20;
/** Largest VHD (spec limit, ~2040 GiB). */
export const VHD_MAX_SIZE = 2040 * 2 ** 30;
/** Sector bitmap in front of every dynamic block (2 MiB / 512 / 8 = 512 bytes). */
export const VHD_BITMAP_SIZE = 512;
/** Dynamic layout: footer copy, dynamic header (1024 B), then the BAT. */
export const VHD_BAT_OFFSET = 1536;

/** Disk types of the footer. */
export const VhdDiskType = { fixed: 2, dynamic: 3 } as const;

/** Cylinders, heads, sectors per track as the spec's appendix computes them. */
export interface Chs {
  readonly cylinders: number;
  readonly heads: number;
  readonly sectorsPerTrack: number;
}

/** The spec's CHS algorithm (appendix "CHS Calculation") for a disk of `sectors` sectors. */
export function vhdGeometry(sectors: number): Chs {
  const total = Math.min(sectors, 65535 * 16 * 255);
  let spt: number, heads: number, cylTimesHeads: number;
  if (total >= 65535 * 16 * 63) {
    spt = 255;
    heads = 16;
    cylTimesHeads = Math.floor(total / spt);
  } else {
    spt = 17;
    cylTimesHeads = Math.floor(total / spt);
    heads = Math.max(4, Math.floor((cylTimesHeads + 1023) / 1024));
    if (cylTimesHeads >= heads * 1024 || heads > 16) {
      spt = 31;
      heads = 16;
      cylTimesHeads = Math.floor(total / spt);
    }
    if (cylTimesHeads >= heads * 1024) {
      spt = 63;
      heads = 16;
      cylTimesHeads = Math.floor(total / spt);
    }
  }
  return { cylinders: Math.floor(cylTimesHeads / heads), heads, sectorsPerTrack: spt };
}

/** One's complement of the byte sum (the field itself counted as zero). */
export function vhdChecksum(bytes: Uint8Array): number {
  let sum = 0;
  for (const b of bytes) sum += b;
  return (~sum) >>> 0;
}

/** Checks a VHD virtual size (a multiple of 512, at most 2040 GiB). */
export function checkVhdSize(size: number): void {
  if (size > VHD_MAX_SIZE) {
    throw new UsageError(`a VHD holds at most 2040 GiB, the disk has ${size} bytes: use vhdx`);
  }
}

/** Seconds since 2000-01-01 UTC, the VHD timestamp. */
export function vhdTimestamp(now: Date): number {
  return Math.max(0, Math.floor((now.getTime() - Date.UTC(2000, 0, 1)) / 1000)) >>> 0;
}

/** Fields of a footer that vary. */
export interface VhdFooterFields {
  /** Virtual size in bytes (a multiple of 512). */
  readonly size: number;
  readonly diskType: number;
  /** 512 for dynamic disks (where the dynamic header is); none for fixed. */
  readonly dataOffset?: number;
  readonly uniqueId: Uint8Array;
  readonly timestamp: number;
}

/**
 * The 512-byte footer. Creator application `qem2` is what makes QEMU (before
 * 10.0) take Current Size as the exact size instead of rounding to the CHS
 * geometry; Hyper-V and Azure use Current Size anyway.
 */
export function encodeVhdFooter(f: VhdFooterFields): Uint8Array {
  const buf = new Uint8Array(512);
  const v = new DataView(buf.buffer);
  const ascii = (s: string, at: number) => buf.set(new TextEncoder().encode(s), at);
  ascii("conectix", 0);
  v.setUint32(8, 2); // features: reserved bit, always set
  v.setUint32(12, 0x00010000);
  v.setBigUint64(16, f.dataOffset === undefined ? 0xffffffffffffffffn : BigInt(f.dataOffset));
  v.setUint32(24, f.timestamp);
  ascii("qem2", 28);
  v.setUint32(32, 0x00050003);
  ascii("Wi2k", 36);
  v.setBigUint64(40, BigInt(f.size));
  v.setBigUint64(48, BigInt(f.size));
  const chs = vhdGeometry(f.size / 512);
  v.setUint16(56, chs.cylinders);
  v.setUint8(58, chs.heads);
  v.setUint8(59, chs.sectorsPerTrack);
  v.setUint32(60, f.diskType);
  buf.set(f.uniqueId.subarray(0, 16), 68);
  v.setUint32(64, vhdChecksum(buf));
  return buf;
}

/** Number of BAT entries: exactly size / block size, rounded up (Azure wants it exact). */
export function vhdBatEntries(size: number): number {
  return Math.ceil(size / VHD_BLOCK_SIZE);
}

/** Bytes the BAT occupies (4 bytes per entry, padded to a sector). */
export function vhdBatBytes(size: number): number {
  return Math.ceil((vhdBatEntries(size) * 4) / 512) * 512;
}

/** The 1024-byte dynamic disk header ("cxsparse"). */
export function encodeVhdDynamicHeader(size: number): Uint8Array {
  const buf = new Uint8Array(1024);
  const v = new DataView(buf.buffer);
  buf.set(new TextEncoder().encode("cxsparse"), 0);
  v.setBigUint64(8, 0xffffffffffffffffn);
  v.setBigUint64(16, BigInt(VHD_BAT_OFFSET));
  v.setUint32(24, 0x00010000);
  v.setUint32(28, vhdBatEntries(size));
  v.setUint32(32, VHD_BLOCK_SIZE);
  v.setUint32(36, vhdChecksum(buf));
  return buf;
}

/** Offset of the first data block (bitmap) of a dynamic VHD. */
export function vhdFirstBlockOffset(size: number): number {
  return VHD_BAT_OFFSET + vhdBatBytes(size);
}

/**
 * BAT entries `[first, first+count)`: the sector of the bitmap of each
 * allocated block (blocks are stored in guest order), 0xFFFFFFFF otherwise.
 */
export function encodeVhdBat(
  size: number,
  allocated: { has(i: number): boolean; rank(i: number): number },
  first: number,
  count: number,
): Uint8Array {
  const buf = new Uint8Array(count * 4).fill(0xff);
  const v = new DataView(buf.buffer);
  const base = vhdFirstBlockOffset(size);
  for (let i = first; i < first + count; i++) {
    if (allocated.has(i)) {
      v.setUint32(
        (i - first) * 4,
        (base + allocated.rank(i) * (VHD_BITMAP_SIZE + VHD_BLOCK_SIZE)) / 512,
      );
    }
  }
  return buf;
}
