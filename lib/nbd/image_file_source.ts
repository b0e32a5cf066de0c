/**
 * A local disk image of any format qemu reads, as a {@link DiskSource}: the
 * format is detected with `qemu-img info`, the file is served read-only by a
 * private `qemu-nbd` ({@link serveImage}) and read through {@link NbdSource}.
 * `close()` stops qemu-nbd.
 *
 * @module
 */
import { InputError } from "../core/errors.ts";
import type { MappedExtent } from "../core/extent.ts";
import type { DiskSource } from "../core/source.ts";
import { NbdSource } from "./reader.ts";
import { serveImage } from "../qemu/qemu_nbd.ts";
import { helperCommand, startError } from "../core/process.ts";

/** Options for {@link openImageFile}. */
export interface ImageFileOptions {
  /** qemu format name; detected when absent. */
  readonly format?: string;
  /** NBD connections (qemu-nbd allows multi-conn for read-only exports). Default 2. */
  readonly connections?: number;
}

/** The format qemu-img detects for `path` (InputError if it cannot open it). */
export async function detectImageFormat(path: string): Promise<string> {
  let out: Deno.CommandOutput;
  try {
    out = await helperCommand("qemu-img", {
      args: ["info", "--output=json", path],
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (err) {
    throw startError("qemu-img", err);
  }
  if (!out.success) {
    const msg = new TextDecoder().decode(out.stderr).trim().split("\n")[0];
    throw new InputError(`cannot read image ${path}: ${msg}`);
  }
  return JSON.parse(new TextDecoder().decode(out.stdout)).format;
}

/** The served image: an NbdSource that also stops its qemu-nbd on close. */
class ImageFileSource implements DiskSource {
  readonly #nbd: NbdSource;
  readonly #stop: () => Promise<void>;

  constructor(nbd: NbdSource, stop: () => Promise<void>) {
    this.#nbd = nbd;
    this.#stop = stop;
  }

  get size(): number {
    return this.#nbd.size;
  }

  map(): Promise<MappedExtent[]> {
    return this.#nbd.map();
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.#nbd.read(offset, length);
  }

  async close(): Promise<void> {
    try {
      await this.#nbd.close();
    } finally {
      await this.#stop();
    }
  }
}

/** Opens `path` read-only through a private qemu-nbd. */
export async function openImageFile(
  path: string,
  opts: ImageFileOptions = {},
): Promise<DiskSource> {
  try {
    await Deno.stat(path);
  } catch {
    throw new InputError(`image ${path} does not exist or cannot be read: check the path`);
  }
  const format = opts.format ?? await detectImageFormat(path);
  const connections = opts.connections ?? 2;
  const served = await serveImage(path, { format, readOnly: true, connections });
  try {
    const nbd = await NbdSource.open(served.uri, { connections });
    return new ImageFileSource(nbd, served.close);
  } catch (err) {
    await served.close();
    throw err;
  }
}
