/**
 * VHD writers. Dynamic: footer copy, dynamic header, BAT, then the allocated
 * 2 MiB blocks in guest order (each behind an all-ones sector bitmap), then
 * the footer. Fixed: the raw disk followed by the footer.
 *
 * @module
 */
import { appendRaw, sectorSize } from "./raw.ts";
import { RunSet } from "./run_set.ts";
import { MappedReader, readBlocks } from "./source_reader.ts";
import {
  checkVhdSize,
  encodeVhdBat,
  encodeVhdDynamicHeader,
  encodeVhdFooter,
  VHD_BAT_OFFSET,
  VHD_BITMAP_SIZE,
  VHD_BLOCK_SIZE,
  vhdBatBytes,
  vhdBatEntries,
  VhdDiskType,
  vhdFirstBlockOffset,
  vhdTimestamp,
} from "./vhd_layout.ts";
import { type ImageWriter, runWriter } from "./writer.ts";

const BAT_ENTRIES_PER_PIECE = 1 << 16;

/** VHD dynamic (sparse, 2 MiB blocks). */
export const vhdDynamicWriter: ImageWriter = {
  format: "vpc",
  subformat: "dynamic",
  summary: "VHD dynamic, 2 MiB blocks, exact size",
  write(source, stream) {
    return runWriter(this, stream, async (sink) => {
      const size = sectorSize(source.size);
      checkVhdSize(size);
      const map = await source.map();
      const blocks = RunSet.fromMap(map, VHD_BLOCK_SIZE);
      const footer = encodeVhdFooter({
        size,
        diskType: VhdDiskType.dynamic,
        dataOffset: 512,
        uniqueId: crypto.getRandomValues(new Uint8Array(16)),
        timestamp: vhdTimestamp(new Date()),
      });
      await sink.write(footer);
      await sink.write(encodeVhdDynamicHeader(size));
      sink.expectAt(VHD_BAT_OFFSET);
      const entries = vhdBatEntries(size);
      for (let i = 0; i < entries; i += BAT_ENTRIES_PER_PIECE) {
        await sink.write(
          encodeVhdBat(size, blocks, i, Math.min(BAT_ENTRIES_PER_PIECE, entries - i)),
        );
      }
      await sink.padTo(VHD_BAT_OFFSET + vhdBatBytes(size));
      sink.expectAt(vhdFirstBlockOffset(size));
      const bitmap = new Uint8Array(VHD_BITMAP_SIZE).fill(0xff);
      let blockStart = -1;
      for await (const piece of readBlocks(new MappedReader(source, map), blocks, VHD_BLOCK_SIZE)) {
        // Pieces never straddle blocks; a bitmap goes before the first piece of each block.
        const block = Math.floor(piece.offset / VHD_BLOCK_SIZE);
        if (block !== blockStart) {
          await sink.write(bitmap);
          blockStart = block;
        }
        await sink.write(piece.bytes);
      }
      await sink.write(footer);
      return { virtualSize: size, storedBytes: blocks.count * VHD_BLOCK_SIZE, companions: [] };
    });
  },
};

/** VHD fixed: raw disk + footer. */
export const vhdFixedWriter: ImageWriter = {
  format: "vpc",
  subformat: "fixed",
  summary: "VHD fixed (raw + footer; holes sent as zeros)",
  write(source, stream) {
    return runWriter(this, stream, async (sink) => {
      const size = sectorSize(source.size);
      checkVhdSize(size);
      const stored = await appendRaw(sink, source, await source.map(), size);
      await sink.write(encodeVhdFooter({
        size,
        diskType: VhdDiskType.fixed,
        uniqueId: crypto.getRandomValues(new Uint8Array(16)),
        timestamp: vhdTimestamp(new Date()),
      }));
      return { virtualSize: size, storedBytes: stored, companions: [] };
    });
  },
};
