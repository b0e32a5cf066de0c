/**
 * A local disk image of any format qemu reads, as a {@link DiskSource}: the
 * format is detected with `qemu-img info`, the file is served read-only by a
 * private `qemu-nbd` on a unix socket in a temp dir, and read through
 * {@link NbdSource}. `close()` stops qemu-nbd and removes the temp dir.
 *
 * @module
 */
import { DependencyError, InputError, SourceError } from "../core/errors.ts";
import type { MappedExtent } from "../core/extent.ts";
import type { DiskSource } from "../core/source.ts";
import { NbdSource } from "../nbd/reader.ts";

/** Options for {@link openImageFile}. */
export interface ImageFileOptions {
  /** qemu format name; detected when absent. */
  readonly format?: string;
  /** NBD connections (qemu-nbd allows multi-conn for read-only exports). Default 2. */
  readonly connections?: number;
}

async function output(cmd: string, args: string[]): Promise<Deno.CommandOutput> {
  try {
    return await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new DependencyError(`${cmd} is not installed: install the qemu-utils package`);
    }
    throw err;
  }
}

/** The format qemu-img detects for `path` (InputError if it cannot open it). */
export async function detectImageFormat(path: string): Promise<string> {
  const out = await output("qemu-img", ["info", "--output=json", path]);
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
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-img-" });
  const socket = `${dir}/nbd.sock`;
  let child: Deno.ChildProcess | undefined;
  const stop = async () => {
    if (child) {
      try {
        child.kill("SIGTERM");
      } catch { /* already exited */ }
      await child.status;
      child = undefined;
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    try {
      child = new Deno.Command("qemu-nbd", {
        // -t: stay up while connections come and go; -e: allow the parallel connections.
        args: ["-r", "-f", format, "-k", socket, "-x", "disk", "-t", "-e", "16", path],
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        throw new DependencyError("qemu-nbd is not installed: install the qemu-utils package");
      }
      throw err;
    }
    const stderr = new Response(child.stderr).text();
    let exited = false;
    child.status.then(() => (exited = true));
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (exited) {
        const msg = (await stderr).trim().split("\n")[0];
        child = undefined;
        throw new SourceError(`qemu-nbd could not serve ${path}: ${msg}`);
      }
      try {
        (await Deno.connect({ transport: "unix", path: socket })).close();
        break;
      } catch {
        if (Date.now() > deadline) {
          throw new SourceError(`qemu-nbd did not start serving ${path} within 15 s`);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    const nbd = await NbdSource.open(`nbd+unix:///disk?socket=${socket}`, {
      connections: opts.connections ?? 2,
    });
    return new ImageFileSource(nbd, stop);
  } catch (err) {
    await stop();
    throw err;
  }
}
