/**
 * The replica image at the DR site, written in place: raw files with plain
 * positioned writes and fsync, qcow2 through the restore layer's
 * NbdImageTarget (a writable `qemu-nbd` and the NBD client: pwrite,
 * write-zeroes, flush), so QEMU keeps the qcow2 metadata.
 *
 * @module
 */
import { fileSystemError, TargetError, toolTargetError } from "../core/errors.ts";
import { NbdImageTarget } from "../targets/nbd_target.ts";
import type { RestoreTarget } from "../targets/target.ts";
import { openForWriting, writeToFile } from "../core/files.ts";
import { helperCommand, startError } from "../core/process.ts";

/** Image formats a replica can have. */
export type ReplicaFormat = "qcow2" | "raw";

/** A replica image open for writing: the same random-access contract as a restore target. */
export type ReplicaImage = RestoreTarget;

/** Creates an empty (all-zero) image of `size` bytes, replacing any file at `path`. */
export async function createReplicaImage(
  path: string,
  format: ReplicaFormat,
  size: number,
): Promise<void> {
  if (format === "raw") {
    const file = await openForWriting(path, { write: true, create: true, truncate: true });
    try {
      await file.truncate(size);
      await file.sync();
    } catch (err) {
      throw fileSystemError(err, "cannot create", path);
    } finally {
      file.close();
    }
    return;
  }
  await runQemuImg(["create", "-q", "-f", "qcow2", path, String(size)], path);
}

/** Opens an existing replica image for writing. */
export function openReplicaImage(path: string, format: ReplicaFormat): Promise<ReplicaImage> {
  // A qemu-nbd left by a crashed receiver is stopped by serveImage.
  return format === "raw" ? RawImage.open(path) : NbdImageTarget.open(path, "qcow2");
}

const ZERO_CHUNK = 1 << 20;

class RawImage implements ReplicaImage {
  readonly #zeros = new Uint8Array(ZERO_CHUNK);
  readonly #scratch = new Uint8Array(ZERO_CHUNK);

  private constructor(readonly path: string, readonly file: Deno.FsFile, readonly size: number) {}

  static async open(path: string): Promise<RawImage> {
    try {
      const file = await Deno.open(path, { read: true, write: true });
      return new RawImage(path, file, (await file.stat()).size);
    } catch (err) {
      throw fileSystemError(err, "cannot open the replica", path);
    }
  }

  async writeData(offset: number, data: Uint8Array): Promise<void> {
    this.#check(offset, data.length);
    await this.file.seek(offset, Deno.SeekMode.Start);
    await writeToFile(this.file, this.path, data);
  }

  /** Overwrites only chunks that are not zero already, so holes stay holes. */
  async writeZero(offset: number, length: number): Promise<void> {
    this.#check(offset, length);
    for (let pos = offset; pos < offset + length; pos += ZERO_CHUNK) {
      const n = Math.min(ZERO_CHUNK, offset + length - pos);
      const current = this.#scratch.subarray(0, n);
      await this.file.seek(pos, Deno.SeekMode.Start);
      let got = 0;
      while (got < n) {
        const r = await this.file.read(current.subarray(got));
        if (r === null) break;
        got += r;
      }
      if (current.subarray(0, got).some((b) => b !== 0)) {
        await this.writeData(pos, this.#zeros.subarray(0, n));
      }
    }
  }

  async flush(): Promise<void> {
    await this.file.syncData();
  }

  close(): Promise<void> {
    try {
      this.file.close();
    } catch {
      // already closed
    }
    return Promise.resolve();
  }

  #check(offset: number, length: number): void {
    if (offset < 0 || offset + length > this.size) {
      throw new TargetError(
        `write ${offset}+${length} is outside replica ${this.path} (size ${this.size})`,
      );
    }
  }
}

/** Runs `qemu-img ARGS` on the image `path`; its last stderr line becomes the TargetError. */
export async function runQemuImg(args: string[], path: string): Promise<void> {
  let out: Deno.CommandOutput;
  try {
    out = await helperCommand("qemu-img", { args, stdout: "null", stderr: "piped" }).output();
  } catch (err) {
    throw startError("qemu-img", err);
  }
  if (!out.success) {
    const text = new TextDecoder().decode(out.stderr).trim().split("\n").pop();
    throw toolTargetError(text ?? "", `qemu-img ${args[0]} failed on`, path);
  }
}
