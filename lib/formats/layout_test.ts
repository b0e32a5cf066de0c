import { deepStrictEqual as eq, ok } from "node:assert/strict";
import { crc32c } from "./crc32c.ts";
import { guidBytes } from "./guid.ts";
import { planQcow2 } from "./qcow2_layout.ts";
import { encodeVhdFooter, vhdChecksum, vhdGeometry } from "./vhd_layout.ts";
import { batIndexOfBlock, encodeVhdxBat, encodeVhdxHeader, planVhdx } from "./vhdx_layout.ts";
import { RunSet } from "./run_set.ts";
import { planSparse, vmdkCounts } from "./vmdk_layout.ts";

const MiB = 1 << 20;

Deno.test("crc32c: the standard check value", () => {
  eq(crc32c(new TextEncoder().encode("123456789")), 0xe3069283);
});

Deno.test("GUIDs are stored with the first three fields little-endian", () => {
  eq([...guidBytes("2DC27766-F623-4200-9D64-115E9BFD4A08").subarray(0, 8)], [
    0x66,
    0x77,
    0xc2,
    0x2d,
    0x23,
    0xf6,
    0x00,
    0x42,
  ]);
});

Deno.test("qcow2 plan: refcount blocks count themselves (fixed point)", () => {
  const l = planQcow2(2 * 2 ** 40, 65536, 0, 0);
  eq([l.l1Size, l.l1Clusters, l.refcountBlocks, l.dataOffset], [4096, 1, 1, 4 * 65536]);
  // 512-byte clusters: 256 refcounts per block, many blocks, all counted.
  const s = planQcow2(8 * MiB, 512, 16384, 64);
  ok(s.refcountBlocks * 256 >= s.totalClusters);
  ok((s.refcountBlocks - 1) * 256 < s.totalClusters);
});

Deno.test("VHD: CHS geometry per the spec and a valid footer checksum", () => {
  eq(vhdGeometry(8 * MiB / 512), { cylinders: 240, heads: 4, sectorsPerTrack: 17 }); // 16384 sectors
  eq(vhdGeometry(2 ** 40 / 512).heads, 16);
  const f = encodeVhdFooter({
    size: 8 * MiB,
    diskType: 3,
    dataOffset: 512,
    uniqueId: new Uint8Array(16),
    timestamp: 0,
  });
  const stored = new DataView(f.buffer).getUint32(64);
  f.fill(0, 64, 68);
  eq(vhdChecksum(f), stored);
});

Deno.test("VHDX: one sector-bitmap BAT entry after every chunk", () => {
  const l = planVhdx(5 * 2 ** 30, MiB, false);
  eq([l.chunkRatio, l.payloadBlocks, l.batEntries], [4096, 5120, 5121]);
  eq([batIndexOfBlock(l, 4095), batIndexOfBlock(l, 4096)], [4095, 4097]);
  const bat = new DataView(
    encodeVhdxBat(l, new RunSet([{ start: 4095, end: 4097 }]), 4095, 3).buffer,
  );
  eq([bat.getBigUint64(0, true) & 7n, bat.getBigUint64(8, true), bat.getBigUint64(16, true) & 7n], [
    6n,
    0n,
    6n,
  ]);
  eq(bat.getBigUint64(16, true) >> 20n, BigInt(l.payloadOffset / MiB + 1));
  const h = encodeVhdxHeader(1, new Uint8Array(16), new Uint8Array(16));
  const crc = new DataView(h.buffer).getUint32(4, true);
  h.fill(0, 4, 8);
  eq(crc32c(h), crc);
});

Deno.test("VMDK: table counts and sparse layout are grain-aligned", () => {
  eq(vmdkCounts(2 ** 40 / 512), { grains: 2 ** 24, gts: 32768, gdSectors: 256 });
  const l = planSparse(64 * MiB / 512);
  eq([l.gts, l.rgdOffset, l.overHead % 128], [2, 21, 0]);
});
