/**
 * Serves a local image over NBD with `qemu-nbd` on a private unix socket, so
 * every qemu-readable format can be read or written with the NBD client.
 *
 * @module
 */
import { join } from "node:path";
import { DependencyError, SourceError } from "../core/errors.ts";

/** A running `qemu-nbd` and the URI of its export. */
export interface ServedImage {
  readonly uri: string;
  /** Stops qemu-nbd (it flushes the image) and removes its socket directory. */
  close(): Promise<void>;
}

export interface ServeOptions {
  /** Image format (`qcow2`, `raw`, `vmdk`, ...). */
  format: string;
  readOnly: boolean;
  /** Dirty bitmap to expose as `qemu:dirty-bitmap:NAME`. */
  bitmap?: string;
  /** Connections the server accepts at once. */
  connections?: number;
}

const READY_TIMEOUT_MS = 10_000;

/** Starts `qemu-nbd` for `path` and waits until it accepts connections. */
export async function serveImage(path: string, opts: ServeOptions): Promise<ServedImage> {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-nbd-" });
  const socket = join(dir, "nbd.sock");
  const args = [
    "-f",
    opts.format,
    "-k",
    socket,
    "-x",
    "disk",
    "-t",
    "-e",
    String(opts.connections ?? 4),
    "--discard=unmap",
    ...(opts.readOnly ? ["-r"] : []),
    ...(opts.bitmap ? ["-B", opts.bitmap] : []),
    path,
  ];
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("qemu-nbd", { args, stdin: "null", stdout: "null", stderr: "piped" })
      .spawn();
  } catch (err) {
    await Deno.remove(dir, { recursive: true });
    if (err instanceof Deno.errors.NotFound) {
      throw new DependencyError("qemu-nbd not found: install the Debian package qemu-utils");
    }
    throw err;
  }
  const stderr = new Response(child.stderr).text();
  const close = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // already exited
    }
    await child.status;
    await stderr;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const exited = child.status.then(() => true);
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (await Promise.race([exited, delay(20).then(() => false)])) {
      const text = (await stderr).trim().split("\n").pop() ?? "";
      await close();
      throw new SourceError(`qemu-nbd cannot open ${path}: ${text || "it exited at once"}`);
    }
    try {
      const conn = await Deno.connect({ transport: "unix", path: socket });
      conn.close();
      return { uri: `nbd+unix:///disk?socket=${socket}`, close };
    } catch {
      // not listening yet
    }
  }
  await close();
  throw new SourceError(`qemu-nbd did not start serving ${path} within ${READY_TIMEOUT_MS} ms`);
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
