/**
 * qcow2 v3 writer: tables first (sized from the allocation map), then the
 * allocated clusters in guest order. Unallocated and zero ranges get no
 * cluster and read as zeros.
 *
 * @module
 */
import { RunSet } from "./run_set.ts";
import { MappedReader, readBlocks } from "./source_reader.ts";
import {
  checkClusterSize,
  encodeL1,
  encodeL2,
  encodeQcow2Header,
  encodeRefcountBlock,
  encodeRefcountTable,
  planQcow2,
} from "./qcow2_layout.ts";
import { type ImageWriter, runWriter } from "./writer.ts";

/** Table entries encoded per piece (1 MiB of 8-byte entries). */
const ENTRIES_PER_PIECE = 1 << 17;

/** Default cluster size, as qemu-img's. */
export const DEFAULT_CLUSTER_SIZE = 64 << 10;

/** The qcow2 writer; honours `clusterSize`. */
export const qcow2Writer: ImageWriter = {
  format: "qcow2",
  subformat: "default",
  summary: "qcow2 v3, uncompressed (--cluster-size, default 64K)",
  write(source, stream, options = {}) {
    return runWriter(this, stream, async (sink) => {
      const C = checkClusterSize(options.clusterSize ?? DEFAULT_CLUSTER_SIZE);
      const map = await source.map();
      const clusters = RunSet.fromMap(map, C);
      const l2s = clusters.group(C / 8);
      const l = planQcow2(source.size, C, clusters.count, l2s.count);

      await sink.write(encodeQcow2Header(l));
      await sink.padTo(l.l1Offset);
      for (let i = 0; i < l.l1Size; i += ENTRIES_PER_PIECE) {
        await sink.write(encodeL1(l, l2s, i, Math.min(ENTRIES_PER_PIECE, l.l1Size - i)));
      }
      await sink.padTo(l.refcountTableOffset);
      for (let i = 0; i < l.refcountBlocks; i += ENTRIES_PER_PIECE) {
        await sink.write(
          encodeRefcountTable(l, i, Math.min(ENTRIES_PER_PIECE, l.refcountBlocks - i)),
        );
      }
      await sink.padTo(l.refcountBlocksOffset);
      for (let b = 0; b < l.refcountBlocks; b++) await sink.write(encodeRefcountBlock(l, b));
      sink.expectAt(l.l2Offset);
      for (const run of l2s.runs) {
        for (let i = run.start; i < run.end; i++) await sink.write(encodeL2(l, clusters, i));
      }
      sink.expectAt(l.dataOffset);
      for await (const piece of readBlocks(new MappedReader(source, map), clusters, C)) {
        await sink.write(piece.bytes);
      }
      sink.expectAt(l.totalClusters * C);
      return { virtualSize: source.size, storedBytes: clusters.count * C, companions: [] };
    });
  },
};
