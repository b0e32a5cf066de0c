/**
 * VHDX writers. Dynamic: only blocks holding data are stored (in block order);
 * fixed: every block, holes as zeros. Both write the last block in full
 * (QEMU 7.2 rejects a short one).
 *
 * @module
 */
import type { MappedExtent } from "../core/extent.ts";
import type { DiskSource } from "../core/source.ts";
import { appendRaw, sectorSize } from "./raw.ts";
import { RunSet } from "./run_set.ts";
import { randomGuid } from "./guid.ts";
import type { AppendSink } from "./sink.ts";
import { MappedReader, readBlocks } from "./source_reader.ts";
import {
  checkVhdxBlockSize,
  encodeVhdxBat,
  encodeVhdxHeader,
  encodeVhdxIdentifier,
  encodeVhdxMetadata,
  encodeVhdxRegionTable,
  planVhdx,
  VHDX_BAT_OFFSET,
  VHDX_HEADER1_OFFSET,
  VHDX_HEADER2_OFFSET,
  VHDX_METADATA_OFFSET,
  VHDX_REGION1_OFFSET,
  VHDX_REGION2_OFFSET,
  type VhdxLayout,
} from "./vhdx_layout.ts";
import { type ImageWriteOptions, type ImageWriter, runWriter } from "./writer.ts";

/** Default block size: 1 MiB keeps sparse images small (Hyper-V's 32 MiB wastes space). */
export const DEFAULT_VHDX_BLOCK_SIZE = 1 << 20;
const BAT_ENTRIES_PER_PIECE = 1 << 17;

async function writeMetadata(
  sink: AppendSink,
  l: VhdxLayout,
  allocated: { has(i: number): boolean; rank(i: number): number },
): Promise<void> {
  await sink.write(encodeVhdxIdentifier("dirtybit"));
  const fileWrite = randomGuid(), dataWrite = randomGuid();
  await sink.padTo(VHDX_HEADER1_OFFSET);
  await sink.write(encodeVhdxHeader(1, fileWrite, dataWrite));
  await sink.padTo(VHDX_HEADER2_OFFSET);
  await sink.write(encodeVhdxHeader(2, fileWrite, dataWrite));
  const regions = encodeVhdxRegionTable(l);
  await sink.padTo(VHDX_REGION1_OFFSET);
  await sink.write(regions);
  await sink.padTo(VHDX_REGION2_OFFSET);
  await sink.write(regions);
  await sink.padTo(VHDX_METADATA_OFFSET); // the log region stays zeros
  await sink.write(encodeVhdxMetadata(l, randomGuid()));
  await sink.padTo(VHDX_BAT_OFFSET);
  for (let e = 0; e < l.batEntries; e += BAT_ENTRIES_PER_PIECE) {
    await sink.write(
      encodeVhdxBat(l, allocated, e, Math.min(BAT_ENTRIES_PER_PIECE, l.batEntries - e)),
    );
  }
  await sink.padTo(l.payloadOffset);
}

function makeWriter(fixed: boolean): ImageWriter {
  return {
    format: "vhdx",
    subformat: fixed ? "fixed" : "dynamic",
    summary: fixed
      ? "VHDX fixed, every block present (--block-size, default 1M)"
      : "VHDX dynamic (--block-size, default 1M)",
    write(source: DiskSource, stream: WritableStream<Uint8Array>, options: ImageWriteOptions = {}) {
      return runWriter(this, stream, async (sink) => {
        const B = checkVhdxBlockSize(options.blockSize ?? DEFAULT_VHDX_BLOCK_SIZE);
        const l = planVhdx(sectorSize(source.size), B, fixed);
        const map: MappedExtent[] = await source.map();
        const blocks = RunSet.fromMap(map, B);
        await writeMetadata(sink, l, blocks);
        let stored: number;
        if (fixed) {
          await appendRaw(sink, source, map, l.payloadBlocks * B);
          stored = l.payloadBlocks * B;
        } else {
          for await (const piece of readBlocks(new MappedReader(source, map), blocks, B)) {
            await sink.write(piece.bytes);
          }
          stored = blocks.count * B;
        }
        sink.expectAt(l.payloadOffset + stored);
        return { virtualSize: l.size, storedBytes: stored, companions: [] };
      });
    },
  };
}

/** VHDX dynamic; honours `blockSize`. */
export const vhdxDynamicWriter: ImageWriter = makeWriter(false);
/** VHDX fixed; honours `blockSize`. */
export const vhdxFixedWriter: ImageWriter = makeWriter(true);
