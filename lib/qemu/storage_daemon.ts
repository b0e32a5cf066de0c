/**
 * Runs `qemu-storage-daemon` over local disk images: one format node per
 * disk, a QMP monitor, and optionally an NBD server with a writable export
 * per disk. The demo uses it as its "VM"; tests use it through their fixture.
 *
 * @module
 */
import { SourceError } from "../core/errors.ts";
import { QmpSocket } from "./qmp.ts";
import { delay } from "../core/async.ts";
import { helperCommand, startError } from "../core/process.ts";

/** One disk opened by the daemon. */
export interface DaemonDisk {
  /** Format node name. */
  node: string;
  /** Image path. */
  image: string;
  format?: "qcow2" | "raw";
  /** Name of a writable NBD export of the node (needs `nbdSocket`). */
  exportName?: string;
}

/** What to start. */
export interface StorageDaemonOptions {
  disks: DaemonDisk[];
  qmpSocket: string;
  /** More QMP sockets, one monitor each (a monitor serves one client at a time). */
  moreQmpSockets?: string[];
  /** Unix socket of the NBD server; none is started without it. */
  nbdSocket?: string;
}

const START_TIMEOUT_MS = 15_000;
const QUIT_TIMEOUT_MS = 10_000;

/** A running qemu-storage-daemon. */
export class StorageDaemon {
  readonly qmpSocket: string;
  readonly #process: Deno.ChildProcess;
  readonly #stderr: Promise<string>;
  #running = true;

  private constructor(qmpSocket: string, process: Deno.ChildProcess) {
    this.qmpSocket = qmpSocket;
    this.#process = process;
    this.#stderr = new Response(process.stderr).text();
    process.status.then(() => this.#running = false);
  }

  /** Starts the daemon and waits until its QMP socket accepts connections. */
  static async start(opts: StorageDaemonOptions): Promise<StorageDaemon> {
    await Deno.remove(opts.qmpSocket).catch(() => undefined);
    const args: string[] = [];
    for (const disk of opts.disks) {
      args.push(
        "--blockdev",
        `driver=file,node-name=${disk.node}-file,filename=${disk.image}`,
        "--blockdev",
        `driver=${disk.format ?? "qcow2"},node-name=${disk.node},file=${disk.node}-file`,
      );
    }
    if (opts.nbdSocket) {
      args.push("--nbd-server", `addr.type=unix,addr.path=${opts.nbdSocket}`);
      for (const disk of opts.disks.filter((d) => d.exportName)) {
        args.push(
          "--export",
          `type=nbd,id=${disk.exportName},node-name=${disk.node},name=${disk.exportName},writable=on`,
        );
      }
    }
    for (const [i, path] of (opts.moreQmpSockets ?? []).entries()) {
      await Deno.remove(path).catch(() => undefined);
      args.push("--chardev", `socket,path=${path},server=on,wait=off,id=qmp${i + 1}`);
      args.push("--monitor", `chardev=qmp${i + 1}`);
    }
    // The monitor comes last: once its socket accepts, every option before it is in place.
    args.push(
      "--chardev",
      `socket,path=${opts.qmpSocket},server=on,wait=off,id=qmp0`,
      "--monitor",
      "chardev=qmp0",
    );
    let process: Deno.ChildProcess;
    try {
      process = helperCommand("qemu-storage-daemon", {
        args,
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
    } catch (err) {
      throw startError("qemu-storage-daemon", err);
    }
    const daemon = new StorageDaemon(opts.qmpSocket, process);
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (true) {
      try {
        (await Deno.connect({ transport: "unix", path: opts.qmpSocket })).close();
        return daemon;
      } catch {
        if (!daemon.#running || Date.now() > deadline) {
          await daemon.kill();
          const why = (await daemon.#stderr).trim().split("\n").pop();
          throw new SourceError(`qemu-storage-daemon did not start: ${why || "timed out"}`);
        }
        await delay(50);
      }
    }
  }

  /** Quits cleanly through QMP (persistent bitmaps are stored); SIGKILL if it hangs. */
  async quit(): Promise<void> {
    if (!this.#running) return;
    try {
      const qmp = await QmpSocket.connect(this.qmpSocket, { connectTimeoutMs: 5000 });
      await qmp.execute("quit").catch(() => undefined);
      await qmp.close();
    } catch {
      this.#signal("SIGTERM");
    }
    const timer = setTimeout(() => this.#signal("SIGKILL"), QUIT_TIMEOUT_MS);
    await this.#process.status;
    clearTimeout(timer);
    await this.#stderr;
  }

  /** SIGKILLs the daemon: its persistent bitmaps stay flagged in-use. */
  async kill(): Promise<void> {
    this.#signal("SIGKILL");
    await this.#process.status;
    await this.#stderr;
  }

  #signal(sig: Deno.Signal): void {
    try {
      this.#process.kill(sig);
    } catch {
      // already gone
    }
  }
}
