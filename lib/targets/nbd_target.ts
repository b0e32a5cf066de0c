/**
 * Restore into any image qemu can write (qcow2 here) through `qemu-nbd` and
 * the NBD client: zero ranges become unallocated where the format allows.
 *
 * @module
 */
import { NbdClient, NbdRequestError } from "../nbd/client.ts";
import { type ServedImage, serveImage } from "../qemu/qemu_nbd.ts";
import { fileSystemError, SourceError, TargetError, toolTargetError } from "../core/errors.ts";
import { helperCommand } from "../core/process.ts";
import type { RestoreTarget } from "./target.ts";

/** An image file written through a private qemu-nbd. */
export class NbdImageTarget implements RestoreTarget {
  readonly size: number;
  readonly #path: string;
  readonly #server: ServedImage;
  readonly #client: NbdClient;
  #closed = false;

  private constructor(path: string, server: ServedImage, client: NbdClient) {
    this.#path = path;
    this.#server = server;
    this.#client = client;
    this.size = client.size;
  }

  /** Creates a new qcow2 image of `size` bytes at `path` and opens it. */
  static async createQcow2(path: string, size: number): Promise<NbdImageTarget> {
    const out = await helperCommand("qemu-img", {
      args: ["create", "-q", "-f", "qcow2", path, String(size)],
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!out.success) {
      const text = new TextDecoder().decode(out.stderr).trim();
      throw toolTargetError(text, "cannot create", path);
    }
    return await NbdImageTarget.open(path, "qcow2");
  }

  /** Opens an existing image of `format` for writing in place. */
  static async open(path: string, format: string): Promise<NbdImageTarget> {
    const server = await serveImage(path, { format, readOnly: false, connections: 1 }).catch(
      (err) => {
        // qemu-nbd's failure to open the image for writing is the target's.
        throw err instanceof SourceError ? toolTargetError(err.message, "cannot write", path) : err;
      },
    );
    try {
      return new NbdImageTarget(path, server, await NbdClient.connect({ uri: server.uri }));
    } catch (err) {
      await server.close();
      throw err;
    }
  }

  writeData(offset: number, data: Uint8Array): Promise<void> {
    return this.#named(this.#client.pwrite(data, offset));
  }

  writeZero(offset: number, length: number): Promise<void> {
    return this.#named(this.#client.zero(offset, length));
  }

  flush(): Promise<void> {
    return this.#named(this.#client.flush());
  }

  /** A refused write names the image, not qemu-nbd's private socket. */
  async #named(request: Promise<void>): Promise<void> {
    try {
      await request;
    } catch (err) {
      if (!(err instanceof NbdRequestError)) throw err;
      const named = fileSystemError(err, "cannot write", this.#path);
      throw named === err ? new TargetError(`cannot write ${this.#path}: ${err.detail}`) : named;
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#client.close();
    await this.#server.close();
  }
}
