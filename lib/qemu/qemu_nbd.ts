/**
 * Serves a local image over NBD with `qemu-nbd`, so every qemu-readable
 * format can be read or written with the NBD client. The one place the
 * project starts qemu-nbd.
 *
 * qemu-nbd dies with the process that started it (a parent-death signal),
 * so no server outlives its owner to hold the image's lock.
 *
 * Each server has a run directory of its own under a directory per image,
 * `$TMPDIR/dirtybit-qemu-nbd-UID/IMAGE-KEY/OWNER-PID.RANDOM/`, holding the
 * unix socket and qemu-nbd's pid file. Should a server still run after its
 * owner died (started by an older dirtybit, or without setpriv), the next
 * {@link serveImage} of the same image finds it there — its parent is no
 * longer the owner the directory names — and stops it before starting its
 * own; a server whose owner still runs it is left alone.
 *
 * {@link serveImageOnHost} starts one on a host reached over SSH, tied to
 * the SSH channel that started it: when dirtybit (or the connection) goes,
 * the remote shell sees the end of its input and stops the server.
 *
 * @module
 */
import { join } from "node:path";
import { SourceError, wrapError } from "../core/errors.ts";
import { delay } from "../core/async.ts";
import { alive, helperCommand, processInfo, startError } from "../core/process.ts";
import { shellCommand, type SshHost } from "../hosts/ssh.ts";

/** A running `qemu-nbd` and the URI of its export. */
export interface ServedImage {
  readonly uri: string;
  /** qemu-nbd's pid. */
  readonly pid: number;
  /** The unix socket (undefined with `tcp`). */
  readonly socketPath?: string;
  /** The pid file qemu-nbd wrote. */
  readonly pidFile: string;
  /** Stops qemu-nbd (it flushes the image; SIGKILL if it hangs) and removes its run directory. */
  close(): Promise<void>;
}

/** How to serve. */
export interface ServeOptions {
  /** Image format (`qcow2`, `raw`, `vmdk`, ...). */
  format: string;
  readOnly: boolean;
  /** Dirty bitmap to expose as `qemu:dirty-bitmap:NAME`. */
  bitmap?: string;
  /** Connections the server accepts at once (default 4). */
  connections?: number;
  /** Export name (default `disk`). */
  exportName?: string;
  /** Listen on 127.0.0.1 at a free port instead of a unix socket. */
  tcp?: boolean;
}

/** qemu-nbd's arguments: `listen` (socket or address), then the export of `path` as `opts` says. */
function qemuNbdArgs(
  listen: string[],
  pidFile: string,
  path: string,
  opts: Omit<ServeOptions, "tcp">,
): string[] {
  return [
    ...listen,
    "--pid-file",
    pidFile,
    "-f",
    opts.format,
    "-x",
    opts.exportName ?? "disk",
    "-t",
    "-e",
    String(opts.connections ?? 4),
    ...(opts.readOnly ? ["-r"] : ["--discard=unmap"]),
    ...(opts.bitmap ? ["-B", opts.bitmap] : []),
    path,
  ];
}

const READY_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 10_000;

/** Starts `qemu-nbd` for `path` and waits until it accepts connections. */
export async function serveImage(path: string, opts: ServeOptions): Promise<ServedImage> {
  const imageDir = await imageRunDir(path);
  await stopOrphans(imageDir);
  const dir = join(imageDir, `${Deno.pid}.${crypto.randomUUID().slice(0, 8)}`);
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const pidFile = pidFileOf(dir);
  const name = opts.exportName ?? "disk";
  const socketPath = opts.tcp ? undefined : join(dir, "nbd.sock");
  const port = opts.tcp ? freePort() : 0;
  const listen = socketPath ? ["-k", socketPath] : ["-b", "127.0.0.1", "-p", String(port)];
  const args = qemuNbdArgs(listen, pidFile, path, opts);
  let child: Deno.ChildProcess;
  try {
    child = helperCommand("qemu-nbd", { args, stdin: "null", stdout: "null", stderr: "piped" })
      .spawn();
  } catch (err) {
    await removeRunDir(dir);
    throw startError("qemu-nbd", err);
  }
  const stderr = new Response(child.stderr).text();
  const close = async () => {
    await stopChild(child);
    await stderr;
    await removeRunDir(dir);
  };
  const exited = child.status.then(() => true);
  const connect = () =>
    socketPath
      ? Deno.connect({ transport: "unix", path: socketPath })
      : Deno.connect({ hostname: "127.0.0.1", port });
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (await Promise.race([exited, delay(20).then(() => false)])) {
      const text = (await stderr).trim().split("\n").pop() ?? "";
      await close();
      throw new SourceError(`qemu-nbd cannot serve ${path}: ${text || "it exited at once"}`);
    }
    try {
      (await connect()).close();
      await Deno.stat(pidFile); // qemu-nbd writes it once set up: what finds orphans later
      const uri = socketPath
        ? `nbd+unix:///${name}?socket=${socketPath}`
        : `nbd://127.0.0.1:${port}/${name}`;
      return { uri, pid: child.pid, socketPath, pidFile, close };
    } catch {
      // not listening yet
    }
  }
  await close();
  throw new SourceError(`qemu-nbd did not start serving ${path} within ${READY_TIMEOUT_MS} ms`);
}

/**
 * Starts `qemu-nbd` for `path` on `host`, on a unix socket in a private
 * directory there (`/tmp/dirtybit-qemu-nbd-RANDOM`, removed when it stops),
 * and waits until it listens. The URI names the socket on the host: read it
 * through a tunnel.
 */
export async function serveImageOnHost(
  host: SshHost,
  path: string,
  opts: Omit<ServeOptions, "tcp">,
): Promise<ServedImage> {
  const dir = `/tmp/dirtybit-qemu-nbd-${crypto.randomUUID().slice(0, 8)}`;
  const name = opts.exportName ?? "disk";
  const socketPath = `${dir}/nbd.sock`;
  const pidFile = `${dir}/qemu-nbd.pid`;
  const qemuNbd = shellCommand([
    "qemu-nbd",
    ...qemuNbdArgs(["-k", socketPath], pidFile, path, opts),
  ]);
  const d = shellCommand([dir]);
  // The server runs while the channel's input stays open; its end (dirtybit
  // closed it, died, or the connection dropped) stops the server.
  const proc = host.spawnScript(
    `mkdir -m 0700 ${d} || exit 1; ${qemuNbd} 2>${d}/err & p=$!; ` +
      `trap 'kill $p 2>/dev/null; wait $p; rm -rf ${d}' EXIT; cat >/dev/null`,
  );
  let closed = false;
  let ended = false;
  proc.status.finally(() => (ended = true)).catch(() => {});
  const close = async () => {
    if (closed) return;
    closed = true;
    await proc.stdin.close().catch(() => {});
    const timer = setTimeout(() => proc.kill(), STOP_TIMEOUT_MS);
    await proc.status.catch(() => {});
    clearTimeout(timer);
  };
  const check = `if [ -S ${d}/nbd.sock ] && [ -s ${shellCommand([pidFile])} ]; then echo ready; ` +
    `elif [ -s ${d}/err ]; then cat ${d}/err; else echo wait; fi`;
  const deadline = Date.now() + READY_TIMEOUT_MS;
  try {
    while (Date.now() < deadline) {
      if (ended) {
        const r = await proc.status.catch((err) => ({ stderr: (err as Error).message }));
        throw new SourceError(
          `qemu-nbd cannot serve ${path} on ${host.target.host}: ${r.stderr.trim() || "it ended"}`,
        );
      }
      const r = await host.runScript(check, { timeoutMs: 30_000 });
      const text = r.stdout.trim();
      if (text === "ready") {
        const uri = `nbd+unix:///${name}?socket=${socketPath}`;
        return { uri, pid: proc.pid, socketPath, pidFile, close };
      }
      if (text !== "wait") {
        throw new SourceError(
          `qemu-nbd cannot serve ${path} on ${host.target.host}: ${text.split("\n").pop()}`,
        );
      }
      await delay(50);
    }
    throw new SourceError(
      `qemu-nbd did not start serving ${path} on ${host.target.host} within ${READY_TIMEOUT_MS} ms`,
    );
  } catch (err) {
    await close();
    throw err;
  }
}

/** The directory of `path`'s servers, named by a hash of its real path. */
async function imageRunDir(path: string): Promise<string> {
  let real: string;
  try {
    real = await Deno.realPath(path);
  } catch (err) {
    throw wrapError(
      err,
      SourceError,
      `cannot serve ${path}: ${(err as Error).message.split("\n")[0]}`,
    );
  }
  const hash = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(real)),
  );
  const key = [...hash.subarray(0, 12)].map((b) => b.toString(16).padStart(2, "0")).join("");
  const tmp = Deno.env.get("TMPDIR") || "/tmp";
  return join(tmp, `dirtybit-qemu-nbd-${Deno.uid() ?? "x"}`, key);
}

/**
 * Stops the servers of an image whose owner is gone (qemu-nbd's parent is no
 * longer the pid its run directory names) and removes their directories.
 */
async function stopOrphans(imageDir: string): Promise<void> {
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(imageDir));
  } catch {
    return; // no server of this image yet
  }
  for (const e of entries) {
    const owner = Number(e.name.split(".")[0]);
    if (!e.isDirectory || !Number.isInteger(owner)) continue;
    const dir = join(imageDir, e.name);
    const pid = await readPid(pidFileOf(dir));
    const proc = pid ? await processInfo(pid) : undefined;
    // A pid file whose pid now belongs to another process is no server of ours.
    if (pid && proc?.argv[0]?.endsWith("qemu-nbd") && proc.argv.includes(pidFileOf(dir))) {
      if (proc.ppid === owner) continue; // its owner still runs it
      await stopPid(pid);
    } else if (await alive(owner)) {
      continue; // starting, or failed and being cleaned up by its owner
    }
    await removeRunDir(dir);
  }
}

function pidFileOf(runDir: string): string {
  return join(runDir, "qemu-nbd.pid");
}

async function readPid(file: string): Promise<number | undefined> {
  try {
    const pid = Number((await Deno.readTextFile(file)).trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** SIGTERM (qemu-nbd flushes and exits), SIGKILL if still there after the timeout. */
async function stopPid(pid: number): Promise<void> {
  const signal = (sig: Deno.Signal) => {
    try {
      Deno.kill(pid, sig);
    } catch {
      // already gone
    }
  };
  signal("SIGTERM");
  const start = Date.now();
  while (await alive(pid)) {
    const waited = Date.now() - start;
    if (waited > 2 * STOP_TIMEOUT_MS) {
      throw new SourceError(`qemu-nbd ${pid} left by a crashed dirtybit does not exit: kill it`);
    }
    if (waited > STOP_TIMEOUT_MS) signal("SIGKILL");
    await delay(20);
  }
}

async function stopChild(child: Deno.ChildProcess): Promise<void> {
  const signal = (sig: Deno.Signal) => {
    try {
      child.kill(sig);
    } catch {
      // already exited
    }
  };
  signal("SIGTERM");
  const timer = setTimeout(() => signal("SIGKILL"), STOP_TIMEOUT_MS);
  try {
    await child.status;
  } finally {
    clearTimeout(timer);
  }
}

/** Removes a server's run directory, and the image's directory once it is empty. */
async function removeRunDir(dir: string): Promise<void> {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  await Deno.remove(join(dir, "..")).catch(() => {}); // fails while other servers remain
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}
