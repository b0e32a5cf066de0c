/**
 * Restore into a raw image file with positioned writes.
 *
 * @module
 */
import { fileSystemError } from "../core/errors.ts";
import type { RestoreTarget } from "./target.ts";
import { openForWriting } from "../core/files.ts";
import { writeAll } from "../core/bytes.ts";

const ZERO_CHUNK = new Uint8Array(1 << 20);

/** A raw file target. `create` makes a new sparse file of `size` bytes. */
export class RawFileTarget implements RestoreTarget {
  readonly size: number;
  readonly #file: Deno.FsFile;
  readonly #path: string;
  #closed = false;

  private constructor(path: string, file: Deno.FsFile, size: number) {
    this.#path = path;
    this.#file = file;
    this.size = size;
  }

  /** Creates (or truncates) `path` as a sparse file of `size` bytes. */
  static async create(path: string, size: number): Promise<RawFileTarget> {
    const file = await openForWriting(path, { write: true, create: true, truncate: true });
    await file.truncate(size);
    return new RawFileTarget(path, file, size);
  }

  /** Opens an existing raw image for writing in place. */
  static async open(path: string): Promise<RawFileTarget> {
    const file = await openForWriting(path, { read: true, write: true });
    const { size } = await file.stat();
    return new RawFileTarget(path, file, size);
  }

  async writeData(offset: number, data: Uint8Array): Promise<void> {
    try {
      await this.#file.seek(offset, Deno.SeekMode.Start);
      await writeAll(this.#file, data);
    } catch (err) {
      throw fileSystemError(err, "cannot write", this.#path);
    }
  }

  async writeZero(offset: number, length: number): Promise<void> {
    for (let off = offset; off < offset + length; off += ZERO_CHUNK.length) {
      await this.writeData(
        off,
        ZERO_CHUNK.subarray(0, Math.min(ZERO_CHUNK.length, offset + length - off)),
      );
    }
  }

  async flush(): Promise<void> {
    try {
      await this.#file.sync();
    } catch (err) {
      throw fileSystemError(err, "cannot write", this.#path);
    }
  }

  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#file.close();
    }
    return Promise.resolve();
  }
}
