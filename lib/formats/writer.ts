/**
 * The one interface behind which every image format lives: a writer takes a
 * {@link DiskSource} (allocation map first, then data) and appends a complete
 * image to a sink, never seeking. Formats are looked up by name in
 * `registry.ts`.
 *
 * @module
 */
import type { DiskSource } from "../core/source.ts";
import { AppendSink } from "./sink.ts";

/** Knobs a writer may honour; each writer documents which ones it reads. */
export interface ImageWriteOptions {
  /** qcow2 cluster size in bytes (power of two, 512 B – 2 MiB; default 64 KiB). */
  readonly clusterSize?: number;
  /** VHDX block size in bytes (power of two, 1 – 256 MiB; default 1 MiB). */
  readonly blockSize?: number;
  /**
   * Final file name of the image as the receiver stores it (VMDK descriptors
   * name their extent files). Default `disk.vmdk`.
   */
  readonly fileName?: string;
  /** zlib level for compressed formats (default 1: fast, parallel across workers). */
  readonly compressionLevel?: number;
  /** Compression workers (default: available cores). */
  readonly workers?: number;
}

/**
 * A second, small output some formats need besides the main stream (e.g. the
 * descriptor of a VMDK vmfs flat disk). The caller stores it next to the image.
 */
export interface CompanionFile {
  /** What it is, e.g. `descriptor`. */
  readonly role: string;
  /** The file name the main image refers to it by (or that refers to the image). */
  readonly name: string;
  readonly bytes: Uint8Array;
}

/** What a writer did. */
export interface ImageWriteReport {
  /** Format and subformat written, e.g. `vmdk` / `streamOptimized`. */
  readonly format: string;
  readonly subformat: string;
  /** Virtual size recorded in the image (sector formats round the source size up to 512). */
  readonly virtualSize: number;
  /** Bytes appended to the sink. */
  readonly bytesWritten: number;
  /** Bytes of disk content stored (allocated clusters/grains/blocks, before compression). */
  readonly storedBytes: number;
  /** Files to store beside the main output (empty for single-file formats). */
  readonly companions: readonly CompanionFile[];
}

/** One image format, written append-only. */
export interface ImageWriter {
  /** qemu-img's name of the format: raw, qcow2, vmdk, vhdx, vpc. */
  readonly format: string;
  /** Variant, e.g. streamOptimized, dynamic, fixed (`default` when there is only one). */
  readonly subformat: string;
  /** One line for `--help`. */
  readonly summary: string;
  /**
   * Writes the whole image to `sink` and closes it (aborts it on failure).
   * The source is not closed.
   */
  write(
    source: DiskSource,
    sink: WritableStream<Uint8Array>,
    options?: ImageWriteOptions,
  ): Promise<ImageWriteReport>;
}

/** Report fields a format body fills in; the rest comes from the sink. */
export type BodyResult = Omit<ImageWriteReport, "bytesWritten" | "format" | "subformat">;

/**
 * Runs a writer body against an {@link AppendSink}: closes the sink on
 * success, aborts it on failure and fills in the common report fields.
 */
export async function runWriter(
  writer: Pick<ImageWriter, "format" | "subformat">,
  stream: WritableStream<Uint8Array>,
  body: (sink: AppendSink) => Promise<BodyResult>,
): Promise<ImageWriteReport> {
  const sink = new AppendSink(stream);
  let result: BodyResult;
  try {
    result = await body(sink);
  } catch (err) {
    await sink.abort(err);
    throw err;
  }
  await sink.close();
  return {
    format: writer.format,
    subformat: writer.subformat,
    bytesWritten: sink.position,
    ...result,
  };
}

/** Rounds up to a multiple of `unit`. */
export function roundUp(n: number, unit: number): number {
  return Math.ceil(n / unit) * unit;
}

/** Whether n is a power of two. */
export function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && Number.isInteger(Math.log2(n));
}
