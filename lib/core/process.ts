/**
 * Processes on this machine, as /proc shows them: who runs, and helper
 * processes that cannot outlive dirtybit.
 *
 * A pid alone does not name a process for long (pids are reused), so a
 * {@link ProcessStamp} adds the kernel's start time of the process: a record
 * naming a stamp whose process is gone, or whose pid now belongs to another
 * process, is known to be left by a dead run.
 *
 * @module
 */
import { DependencyError } from "./errors.ts";

/** A process identified across pid reuse. */
export interface ProcessStamp {
  pid: number;
  /** Start time in clock ticks after boot (`/proc/PID/stat` field 22). */
  start: number;
}

/** What /proc tells about a live process. */
export interface ProcessInfo {
  argv: string[];
  ppid: number;
  start: number;
}

/** argv, parent and start time of a live (not zombie) process, or undefined. */
export async function processInfo(pid: number): Promise<ProcessInfo | undefined> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    // Fields after "(comm)": state(3), ppid(4), ... starttime(22).
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (fields[0] === "Z") return undefined; // exited, waiting for a parent that may never reap it
    const argv = (await Deno.readTextFile(`/proc/${pid}/cmdline`)).split("\0").filter(Boolean);
    return { argv, ppid: Number(fields[1]), start: Number(fields[19]) };
  } catch {
    return undefined;
  }
}

/** True while the process `pid` runs. */
export async function alive(pid: number): Promise<boolean> {
  return (await processInfo(pid)) !== undefined;
}

let self: ProcessStamp | undefined;

/** The stamp of this process. */
export async function selfStamp(): Promise<ProcessStamp> {
  self ??= { pid: Deno.pid, start: (await processInfo(Deno.pid))!.start };
  return self;
}

/** True while the process of `stamp` runs (its pid not reused by another). */
export async function stampAlive(stamp: ProcessStamp): Promise<boolean> {
  return (await processInfo(stamp.pid))?.start === stamp.start;
}

/** The Debian package of each program dirtybit runs, named when the program is missing. */
const DEBIAN_PACKAGES = {
  blkid: "util-linux",
  losetup: "mount",
  mount: "mount",
  nbdfuse: "libnbd-bin",
  partx: "util-linux",
  "qemu-img": "qemu-utils",
  "qemu-io": "qemu-utils",
  "qemu-nbd": "qemu-utils",
  "qemu-storage-daemon": "qemu-system-common",
  setsid: "util-linux",
  umount: "mount",
} as const;

/** A program dirtybit runs that a Debian package brings. */
export type HelperProgram = keyof typeof DEBIAN_PACKAGES;

/** The error for a `program` that is not installed: it names the Debian package to install. */
export function programMissing(program: HelperProgram): DependencyError {
  return new DependencyError(
    `${program} not found: install the Debian package ${DEBIAN_PACKAGES[program]}`,
  );
}

/** What to throw for `err` from starting `program`: {@link programMissing} if it is not there. */
export function startError(program: HelperProgram, err: unknown): unknown {
  return err instanceof Deno.errors.NotFound ? programMissing(program) : err;
}

const SETPRIV = "/usr/bin/setpriv";
let setprivFound: boolean | undefined;

/**
 * A command for a helper process (qemu-nbd, ssh, ...) that the kernel kills
 * when dirtybit dies, however it dies (`setpriv --pdeathsig SIGKILL`, from
 * util-linux). Without setpriv the helper is started as it is. A missing
 * program still throws `Deno.errors.NotFound` from `spawn`/`output`.
 */
export function helperCommand(program: string, options: Deno.CommandOptions): Deno.Command {
  setprivFound ??= statIsFile(SETPRIV);
  if (!setprivFound) return new Deno.Command(program, options);
  const path = onPath(program);
  if (!path) return new Deno.Command(program, options); // spawn reports NotFound
  return new Deno.Command(SETPRIV, {
    ...options,
    args: ["--pdeathsig", "SIGKILL", "--", path, ...(options.args ?? [])],
  });
}

function onPath(program: string): string | undefined {
  if (program.includes("/")) return program;
  const dirs = (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":");
  return dirs.map((d) => `${d || "."}/${program}`).find(statIsFile);
}

function statIsFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}
