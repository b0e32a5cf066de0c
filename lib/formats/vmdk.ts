/**
 * VMDK writers: streamOptimized (compressed grains, tables after the data,
 * footer + end-of-stream marker: what OVF/ESXi import takes), monolithicSparse
 * (Workstation) and vmfs flat (descriptor + raw extent, for ESXi datastores).
 *
 * @module
 */
import type { DiskSource } from "../core/source.ts";
import { DeflatePool } from "./deflate_pool.ts";
import { appendRaw, sectorSize } from "./raw.ts";
import { RunSet } from "./run_set.ts";
import { MappedReader, readBlocks } from "./source_reader.ts";
import {
  embeddedDescriptor,
  encodeGrain,
  encodeMarker,
  encodeSparseGd,
  encodeSparseGt,
  encodeSparseHeader,
  encodeU32Table,
  GD_AT_END,
  GRAIN_SECTORS,
  GRAIN_SIZE,
  GT_SECTORS,
  GTES_PER_GT,
  MarkerType,
  planSparse,
  randomCid,
  vmdkCounts,
  vmdkDescriptor,
} from "./vmdk_layout.ts";
import { type ImageWriteOptions, type ImageWriter, runWriter } from "./writer.ts";

/** Default name the descriptor gives the image when the caller names none. */
const DEFAULT_FILE = "disk.vmdk";
/** Stream header + descriptor occupy one grain. */
const STREAM_OVERHEAD = GRAIN_SECTORS;

function baseName(path: string | undefined): string {
  return (path ?? DEFAULT_FILE).split("/").pop() || DEFAULT_FILE;
}

/** File name of the flat extent belonging to descriptor `name` (`x.vmdk` -> `x-flat.vmdk`). */
export function flatExtentName(name: string): string {
  return name.replace(/\.vmdk$/i, "") + "-flat.vmdk";
}

/** streamOptimized; honours `compressionLevel`, `workers`, `fileName`. */
export const vmdkStreamWriter: ImageWriter = {
  format: "vmdk",
  subformat: "streamOptimized",
  summary: "VMDK streamOptimized v3 (OVF/ESXi import; compressed, zero grains skipped)",
  write(source: DiskSource, stream: WritableStream<Uint8Array>, options: ImageWriteOptions = {}) {
    return runWriter(this, stream, async (sink) => {
      const capacity = sectorSize(source.size) / 512;
      const { gts, gdSectors } = vmdkCounts(capacity);
      const header = (gdOffset: number | bigint) =>
        encodeSparseHeader({
          version: 3,
          capacity,
          rgdOffset: 0,
          gdOffset,
          overHead: STREAM_OVERHEAD,
          streamOptimized: true,
        });
      await sink.write(header(GD_AT_END));
      await sink.write(embeddedDescriptor(vmdkDescriptor({
        createType: "streamOptimized",
        capacity,
        extentFile: baseName(options.fileName),
        cid: randomCid(),
      })));
      await sink.padTo(STREAM_OVERHEAD * 512);

      const map = await source.map();
      const grains = RunSet.fromMap(map, GRAIN_SIZE);
      const gd = new Uint32Array(gts);
      let gt = new Uint32Array(GTES_PER_GT), gtIndex = 0, gtUsed = false, stored = 0;
      const flushGt = async () => {
        if (gtUsed) {
          await sink.write(encodeMarker(MarkerType.gt, GT_SECTORS));
          gd[gtIndex] = sink.position / 512;
          await sink.write(encodeU32Table(gt));
          gt = new Uint32Array(GTES_PER_GT);
          gtUsed = false;
        }
      };
      const workers = options.workers ?? navigator.hardwareConcurrency ?? 2;
      const pool = new DeflatePool(workers, options.compressionLevel ?? 1);
      try {
        const inFlight: { offset: number; result: Promise<(Uint8Array | null)[]> }[] = [];
        const drainOne = async () => {
          const { offset, result } = inFlight.shift()!;
          const compressed = await result;
          for (let k = 0; k < compressed.length; k++) {
            const data = compressed[k];
            if (!data) continue;
            const grain = offset / GRAIN_SIZE + k;
            const t = Math.floor(grain / GTES_PER_GT);
            if (t !== gtIndex) {
              await flushGt();
              gtIndex = t;
            }
            gt[grain % GTES_PER_GT] = sink.position / 512;
            gtUsed = true;
            await sink.write(encodeGrain(grain * GRAIN_SECTORS, data));
            stored += GRAIN_SIZE;
          }
        };
        const reader = new MappedReader(source, map);
        for await (const piece of readBlocks(reader, grains, GRAIN_SIZE, 2 * pool.size + 2)) {
          const result = pool.compress(piece.bytes, GRAIN_SIZE);
          result.catch(() => {}); // surfaces when awaited in order
          inFlight.push({ offset: piece.offset, result });
          if (inFlight.length >= 2 * pool.size) await drainOne();
        }
        while (inFlight.length) await drainOne();
      } finally {
        pool.close();
      }
      await flushGt();
      await sink.write(encodeMarker(MarkerType.gd, gdSectors));
      const gdOffset = sink.position / 512;
      await sink.write(encodeU32Table(gd));
      await sink.write(encodeMarker(MarkerType.footer, 1));
      await sink.write(header(gdOffset));
      await sink.write(encodeMarker(MarkerType.eos, 0));
      return { virtualSize: capacity * 512, storedBytes: stored, companions: [] };
    });
  },
};

/** monolithicSparse (hosted, version 1); honours `fileName`. */
export const vmdkSparseWriter: ImageWriter = {
  format: "vmdk",
  subformat: "monolithicSparse",
  summary: "VMDK monolithicSparse (Workstation/Fusion; 64 KiB grains)",
  write(source, stream, options = {}) {
    return runWriter(this, stream, async (sink) => {
      const capacity = sectorSize(source.size) / 512;
      const l = planSparse(capacity);
      const map = await source.map();
      const grains = RunSet.fromMap(map, GRAIN_SIZE);
      await sink.write(encodeSparseHeader({
        version: 1,
        capacity,
        rgdOffset: l.rgdOffset,
        gdOffset: l.gdOffset,
        overHead: l.overHead,
        streamOptimized: false,
      }));
      await sink.write(embeddedDescriptor(vmdkDescriptor({
        createType: "monolithicSparse",
        capacity,
        extentFile: baseName(options.fileName),
        cid: randomCid(),
      })));
      for (const gdSector of [l.rgdOffset, l.gdOffset]) {
        sink.expectAt(gdSector * 512);
        await sink.write(encodeSparseGd(l, gdSector));
        await sink.padTo((gdSector + l.gdSectors) * 512);
        for (let t = 0; t < l.gts; t++) await sink.write(encodeSparseGt(l, grains, t));
      }
      await sink.padTo(l.overHead * 512);
      for await (const piece of readBlocks(new MappedReader(source, map), grains, GRAIN_SIZE)) {
        await sink.write(piece.bytes);
      }
      sink.expectAt((l.overHead + grains.count * GRAIN_SECTORS) * 512);
      return {
        virtualSize: capacity * 512,
        storedBytes: grains.count * GRAIN_SIZE,
        companions: [],
      };
    });
  },
};

/**
 * vmfs flat: the sink receives the raw flat extent; the descriptor (named
 * `fileName`, default `disk.vmdk`, pointing at `<name>-flat.vmdk`) comes back
 * as a companion file for the caller to store beside it.
 */
export const vmdkFlatWriter: ImageWriter = {
  format: "vmdk",
  subformat: "vmfs",
  summary: "VMDK vmfs flat for ESXi datastores: descriptor + NAME-flat.vmdk",
  write(source, stream, options = {}) {
    return runWriter(this, stream, async (sink) => {
      const size = sectorSize(source.size);
      const name = baseName(options.fileName);
      const descriptor = vmdkDescriptor({
        createType: "vmfs",
        capacity: size / 512,
        extentFile: flatExtentName(name),
        cid: randomCid(),
      });
      const stored = await appendRaw(sink, source, await source.map(), size);
      return {
        virtualSize: size,
        storedBytes: stored,
        companions: [{ role: "descriptor", name, bytes: new TextEncoder().encode(descriptor) }],
      };
    });
  },
};
