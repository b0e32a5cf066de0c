/**
 * raw: the disk bytes in order. Over a pipe, unallocated ranges are sent as
 * zeros (the receiver may sparsify). Also the body of VHD fixed and of the
 * VMDK vmfs flat extent.
 *
 * @module
 */
import { clipExtents, type MappedExtent, splitExtents } from "../core/extent.ts";
import type { DiskSource } from "../core/source.ts";
import type { AppendSink } from "./sink.ts";
import { MappedReader, MAX_READ, readAheadOf } from "./source_reader.ts";
import { type ImageWriter, roundUp, runWriter } from "./writer.ts";

/**
 * Appends the disk content `[0, length)` (zeros past the source's size), reading
 * only data extents. Returns the data bytes read.
 */
export async function appendRaw(
  sink: AppendSink,
  source: DiskSource,
  map: readonly MappedExtent[],
  length: number,
): Promise<number> {
  const reader = new MappedReader(source, map);
  const data = map.filter((e) => e.kind === "data" && e.length > 0);
  let read = 0;
  const base = sink.position;
  for await (
    const piece of readAheadOf(splitExtents(clipExtents(data, length), MAX_READ), reader)
  ) {
    await sink.padTo(base + piece.offset);
    await sink.write(piece.bytes);
    read += piece.bytes.length;
  }
  await sink.padTo(base + length);
  return read;
}

/** The raw writer: exactly `source.size` bytes. */
export const rawWriter: ImageWriter = {
  format: "raw",
  subformat: "default",
  summary: "raw disk bytes (holes sent as zeros)",
  write(source, stream) {
    return runWriter(this, stream, async (sink) => {
      const stored = await appendRaw(sink, source, await source.map(), source.size);
      return { virtualSize: source.size, storedBytes: stored, companions: [] };
    });
  },
};

/** Virtual size of sector-based formats: the source size rounded up to 512 bytes. */
export function sectorSize(size: number): number {
  return roundUp(size, 512);
}
