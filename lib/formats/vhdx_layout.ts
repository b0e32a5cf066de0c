/**
 * VHDX structures ([MS-VHDX], QEMU's block/vhdx.{h,c}) for a sequential
 * writer: file identifier, two headers and two region tables (CRC-32C), an
 * empty log, the metadata region, the BAT (payload entries interleaved with
 * one sector-bitmap entry per chunk) and the payload blocks. Little-endian.
 * Pure logic, no I/O.
 *
 * @module
 */
import { UsageError } from "../core/errors.ts";
import { crc32c } from "./crc32c.ts";
import { guidBytes } from "./guid.ts";
import { isPowerOfTwo, roundUp } from "./writer.ts";

const MiB = 1 << 20;
const KiB = 1 << 10;
/** Offsets of the header section's structures. */
export const VHDX_HEADER1_OFFSET = 64 * KiB;
export const VHDX_HEADER2_OFFSET = 128 * KiB;
export const VHDX_REGION1_OFFSET = 192 * KiB;
export const VHDX_REGION2_OFFSET = 256 * KiB;
/** The sequential layout: log at 1 MiB, metadata at 2 MiB, BAT at 3 MiB. */
export const VHDX_LOG_OFFSET = MiB;
export const VHDX_LOG_LENGTH = MiB;
export const VHDX_METADATA_OFFSET = 2 * MiB;
export const VHDX_METADATA_LENGTH = MiB;
export const VHDX_BAT_OFFSET = 3 * MiB;
/** Largest virtual disk (64 TB). */
const MAX_SIZE = 64 * 2 ** 40;
/** Logical sector size: QEMU reads only 512. */
const LOGICAL_SECTOR = 512;
const PHYSICAL_SECTOR = 4096;

const BAT_GUID = guidBytes("2DC27766-F623-4200-9D64-115E9BFD4A08");
const METADATA_GUID = guidBytes("8B7CA206-4790-4B9A-B8FE-575F050F886E");
const FILE_PARAMETERS = guidBytes("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
const VIRTUAL_DISK_SIZE = guidBytes("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
const PAGE83 = guidBytes("BECA12AB-B2E6-4523-93EF-C309E000C746");
const LOGICAL_SECTOR_SIZE = guidBytes("8141BF1D-A96F-4709-BA47-F233A8FAAB5F");
const PHYSICAL_SECTOR_SIZE = guidBytes("CDA348C7-445D-4471-9CC9-E9885251C556");

/** BAT states used by dynamic and fixed files. */
const PAYLOAD_BLOCK_FULLY_PRESENT = 6n;

/** Geometry of a VHDX file. */
export interface VhdxLayout {
  /** Virtual size (a multiple of 512). */
  readonly size: number;
  readonly blockSize: number;
  readonly fixed: boolean;
  /** Payload blocks per chunk (one sector-bitmap BAT entry follows each chunk). */
  readonly chunkRatio: number;
  readonly payloadBlocks: number;
  readonly batEntries: number;
  /** BAT region length, a multiple of 1 MiB. */
  readonly batLength: number;
  /** Where the first payload block goes. */
  readonly payloadOffset: number;
}

/** Checks a block size option and returns it. */
export function checkVhdxBlockSize(blockSize: number): number {
  if (!isPowerOfTwo(blockSize) || blockSize < MiB || blockSize > 256 * MiB) {
    throw new UsageError(
      `VHDX block size ${blockSize} is invalid: use a power of two from 1M to 256M`,
    );
  }
  return blockSize;
}

/** Plans a VHDX of `size` bytes (a multiple of 512). */
export function planVhdx(size: number, blockSize: number, fixed: boolean): VhdxLayout {
  checkVhdxBlockSize(blockSize);
  if (size > MAX_SIZE) {
    throw new UsageError(`a VHDX holds at most 64 TB, the disk has ${size} bytes`);
  }
  const chunkRatio = (2 ** 23 * LOGICAL_SECTOR) / blockSize;
  const payloadBlocks = Math.ceil(size / blockSize);
  const batEntries = payloadBlocks === 0
    ? 0
    : payloadBlocks + Math.floor((payloadBlocks - 1) / chunkRatio);
  const batLength = Math.max(MiB, roundUp(batEntries * 8, MiB));
  return {
    size,
    blockSize,
    fixed,
    chunkRatio,
    payloadBlocks,
    batEntries,
    batLength,
    payloadOffset: VHDX_BAT_OFFSET + batLength,
  };
}

/** BAT index of payload block i (a bitmap entry follows every chunkRatio payload entries). */
export function batIndexOfBlock(l: VhdxLayout, block: number): number {
  return block + Math.floor(block / l.chunkRatio);
}

/** The file type identifier: "vhdxfile" and the creator in UTF-16LE. */
export function encodeVhdxIdentifier(creator: string): Uint8Array {
  const buf = new Uint8Array(8 + 512);
  buf.set(new TextEncoder().encode("vhdxfile"), 0);
  const v = new DataView(buf.buffer);
  [...creator.slice(0, 255)].forEach((ch, i) => v.setUint16(8 + i * 2, ch.charCodeAt(0), true));
  return buf;
}

/** A 4 KiB header with its CRC-32C. */
export function encodeVhdxHeader(
  sequence: number,
  fileWriteGuid: Uint8Array,
  dataWriteGuid: Uint8Array,
): Uint8Array {
  const buf = new Uint8Array(4 * KiB);
  const v = new DataView(buf.buffer);
  buf.set(new TextEncoder().encode("head"), 0);
  v.setBigUint64(8, BigInt(sequence), true);
  buf.set(fileWriteGuid, 16);
  buf.set(dataWriteGuid, 32);
  // LogGuid (48) stays zero: there is no log to replay.
  v.setUint16(64, 0, true); // LogVersion
  v.setUint16(66, 1, true); // Version
  v.setUint32(68, VHDX_LOG_LENGTH, true);
  v.setBigUint64(72, BigInt(VHDX_LOG_OFFSET), true);
  v.setUint32(4, crc32c(buf), true);
  return buf;
}

/** A 64 KiB region table (BAT and metadata, both required) with its CRC-32C. */
export function encodeVhdxRegionTable(l: VhdxLayout): Uint8Array {
  const buf = new Uint8Array(64 * KiB);
  const v = new DataView(buf.buffer);
  buf.set(new TextEncoder().encode("regi"), 0);
  v.setUint32(8, 2, true);
  const entry = (at: number, guid: Uint8Array, offset: number, length: number) => {
    buf.set(guid, at);
    v.setBigUint64(at + 16, BigInt(offset), true);
    v.setUint32(at + 24, length, true);
    v.setUint32(at + 28, 1, true); // Required
  };
  entry(16, BAT_GUID, VHDX_BAT_OFFSET, l.batLength);
  entry(48, METADATA_GUID, VHDX_METADATA_OFFSET, VHDX_METADATA_LENGTH);
  v.setUint32(4, crc32c(buf), true);
  return buf;
}

/** The start of the metadata region: the table at 0 and the five items at 64 KiB. */
export function encodeVhdxMetadata(l: VhdxLayout, diskId: Uint8Array): Uint8Array {
  const buf = new Uint8Array(64 * KiB + 40);
  const v = new DataView(buf.buffer);
  buf.set(new TextEncoder().encode("metadata"), 0);
  const required = 4, virtualDisk = 2;
  const items: [Uint8Array, number, number][] = [
    [FILE_PARAMETERS, 8, required],
    [VIRTUAL_DISK_SIZE, 8, required | virtualDisk],
    [PAGE83, 16, required | virtualDisk],
    [LOGICAL_SECTOR_SIZE, 4, required | virtualDisk],
    [PHYSICAL_SECTOR_SIZE, 4, required | virtualDisk],
  ];
  v.setUint16(10, items.length, true);
  let data = 64 * KiB;
  items.forEach(([guid, length, flags], i) => {
    const at = 32 + i * 32;
    buf.set(guid, at);
    v.setUint32(at + 16, data, true);
    v.setUint32(at + 20, length, true);
    v.setUint32(at + 24, flags, true);
    data += length;
  });
  const item = 64 * KiB;
  v.setUint32(item, l.blockSize, true);
  v.setUint32(item + 4, l.fixed ? 1 : 0, true); // LeaveBlocksAllocated; HasParent = 0
  v.setBigUint64(item + 8, BigInt(l.size), true);
  buf.set(diskId, item + 16);
  v.setUint32(item + 32, LOGICAL_SECTOR, true);
  v.setUint32(item + 36, PHYSICAL_SECTOR, true);
  return buf;
}

/**
 * BAT entries `[first, first+count)`. Payload blocks are stored in block order
 * from {@link VhdxLayout.payloadOffset}; an allocated block is FULLY_PRESENT
 * at its offset, anything else (and every sector-bitmap entry) NOT_PRESENT
 * with offset 0. In a fixed file every payload block is allocated.
 */
export function encodeVhdxBat(
  l: VhdxLayout,
  allocated: { has(i: number): boolean; rank(i: number): number },
  first: number,
  count: number,
): Uint8Array {
  const buf = new Uint8Array(count * 8);
  const v = new DataView(buf.buffer);
  const period = l.chunkRatio + 1;
  for (let e = first; e < first + count; e++) {
    if ((e + 1) % period === 0) continue; // sector bitmap block: never present here
    const block = e - Math.floor(e / period);
    if (!l.fixed && !allocated.has(block)) continue;
    const rank = l.fixed ? block : allocated.rank(block);
    const offsetMiB = (l.payloadOffset + rank * l.blockSize) / MiB;
    v.setBigUint64((e - first) * 8, (BigInt(offsetMiB) << 20n) | PAYLOAD_BLOCK_FULLY_PRESENT, true);
  }
  return buf;
}
