/**
 * Pure logic of `dirtybit mount`: what the kernel tables say (/proc/mounts,
 * `losetup --list`), how each file system is mounted read-only, and what a
 * state file's leftovers are. No I/O.
 *
 * @module
 */
import { basename, join } from "node:path";
import { fitsUnixSocket } from "../core/files.ts";
import type { ProcessStamp } from "../core/process.ts";

/** How the private directory of a mount's NBD socket is named, and the socket in it. */
export const SOCKET_DIR_PREFIX = "dirtybit-mount-";
export const SOCKET_NAME = "nbd.sock";

/** What a mount records in `DIR/.dirtybit-mount.json` before it starts or creates each thing. */
export interface MountState {
  /** Marks the file as dirtybit's. */
  tool: "dirtybit mount";
  owner: ProcessStamp;
  streams: string[];
  /** Private directory under DIR: the FUSE mount point. */
  work: string;
  /**
   * Private directory of the server's socket, outside DIR (see {@link socketDirFor});
   * absent in records of versions that kept the socket in `work`.
   */
  socketDir?: string;
  /** The FUSE mount point (nbdfuse) and the disk file in it. */
  fuse?: string;
  fuseFile?: string;
  /** nbdfuse's process. */
  nbdfuse?: ProcessStamp;
  /** Loop devices attached to `fuseFile`, for the operator (cleanup matches them by backing file). */
  loops: string[];
  /** File system mount points under DIR. */
  mounts: string[];
  /** Directories created under DIR for them. */
  dirs: string[];
}

/** A line of /proc/mounts. */
export interface MountEntry {
  source: string;
  target: string;
  fstype: string;
}

/** /proc/mounts escapes space, tab, newline and backslash as octal (`\040`). */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct) => String.fromCharCode(parseInt(oct, 8)));
}

/** Parses /proc/mounts (or /proc/self/mounts). */
export function parseMounts(text: string): MountEntry[] {
  return text.split("\n").filter((l) => l.trim()).map((line) => {
    const [source, target, fstype] = line.split(" ").map(unescapeMountField);
    return { source, target, fstype };
  });
}

/** A loop device and the file behind it. */
export interface LoopEntry {
  device: string;
  backFile: string;
}

/** Parses `losetup --list --noheadings --raw --output NAME,BACK-FILE`. */
export function parseLoops(text: string): LoopEntry[] {
  return text.split("\n").filter((l) => l.trim()).map((line) => {
    const space = line.indexOf(" ");
    // --raw escapes spaces in the file name as \x20.
    const backFile = line.slice(space + 1).replace(
      /\\x([0-9a-fA-F]{2})/g,
      (_, hex) => String.fromCharCode(parseInt(hex, 16)),
    );
    return { device: line.slice(0, space), backFile };
  });
}

/**
 * `mount -o` options for a read-only mount of `fstype`. A backup of a running
 * guest is crash-consistent: ext3/4 and XFS would replay their journal, which
 * needs a writable device, so the journal is not loaded.
 */
export function readOnlyOptions(fstype: string): string {
  if (/^ext[34]$/.test(fstype)) return "ro,noload";
  if (fstype === "xfs") return "ro,norecovery";
  return "ro";
}

/** What `blkid -p -o export` says about a device. */
export interface Probe {
  /** The file system or other content type (`ext4`, `swap`, ...). */
  type?: string;
  /** `filesystem`, `other` (swap), `raid`, `crypto`, ... */
  usage?: string;
  /** Partition table type of a whole disk (`dos`, `gpt`). */
  ptType?: string;
}

/** Parses `blkid -p -o export` output. */
export function parseProbe(text: string): Probe {
  const values = new Map(
    text.split("\n").filter((l) => l.includes("=")).map((l) => {
      const eq = l.indexOf("=");
      return [l.slice(0, eq), l.slice(eq + 1)] as const;
    }),
  );
  return { type: values.get("TYPE"), usage: values.get("USAGE"), ptType: values.get("PTTYPE") };
}

/** Why a probed device is not mounted, or undefined when it has a file system to mount. */
export function unmountable(probe: Probe): string | undefined {
  if (!probe.type) return "no file system found";
  if (probe.usage !== "filesystem") return `holds ${probe.type}, not a file system`;
  return undefined;
}

/** The name under DIR of partition device `part` of loop device `loop` (`/dev/loop3p2` → `p2`). */
export function partitionName(loop: string, part: string): string {
  return part.startsWith(`${loop}p`) ? part.slice(loop.length) : part.split("/").pop()!;
}

/** What a dead mount left that must be undone, in order. */
export interface Leftovers {
  /** Mount points to unmount, deepest first. */
  unmount: string[];
  /** Loop devices to detach. */
  detach: string[];
  /** The FUSE mount point, when mounted. */
  fuse?: string;
}

/**
 * What of `state` is still in place: its mounts still mounted (and anything
 * mounted from its loop devices), the loop devices still attached to its FUSE
 * file (a recorded device now attached to another file is someone else's),
 * and the FUSE mount.
 */
export function leftovers(state: MountState, mounts: MountEntry[], loops: LoopEntry[]): Leftovers {
  const detach = loops.filter((l) => state.fuseFile !== undefined && l.backFile === state.fuseFile)
    .map((l) => l.device);
  const fromOurLoops = (source: string) =>
    detach.some((d) => source === d || source.startsWith(`${d}p`));
  const unmount = mounts
    .filter((m) => state.mounts.includes(m.target) || fromOurLoops(m.source))
    .map((m) => m.target);
  const fuse = state.fuse !== undefined && mounts.some((m) => m.target === state.fuse)
    ? state.fuse
    : undefined;
  return {
    unmount: [...new Set(unmount)].sort((a, b) => b.length - a.length),
    detach,
    fuse,
  };
}

/**
 * The private directory for a mount's NBD socket: `dirtybit-mount-TAG` under
 * the first of `bases` (e.g. $XDG_RUNTIME_DIR, the temp directory) where the
 * socket's path fits, else under /tmp. Not under DIR: a Unix socket's path
 * has at most 107 bytes, and DIR may be deeper than that.
 */
export function socketDirFor(bases: readonly string[], tag: string): string {
  const name = `${SOCKET_DIR_PREFIX}${tag}`;
  const base = bases.find((b) => b.startsWith("/") && fitsUnixSocket(join(b, name, SOCKET_NAME)));
  return join(base ?? "/tmp", name);
}

/** Whether `path` (read from a state file) names a socket directory {@link socketDirFor} makes. */
export function isSocketDir(path: string): boolean {
  return path.startsWith("/") && basename(path).startsWith(SOCKET_DIR_PREFIX);
}
