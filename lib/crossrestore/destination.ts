/**
 * Where a cross-restore writes the target's files: a directory on this
 * machine (`--dest DIR`, staging) or a path on a target host over SSH
 * (`--dest ssh://user@host[:port]/path`). Both expose the same operations so
 * the target modules do not care which it is. Large files are written to
 * `NAME.partial` and renamed only after the writer succeeded.
 *
 * @module
 */
import { dirname, join, resolve } from "node:path";
import { describeError, TargetError, UsageError, wrapError } from "../core/errors.ts";
import type { RemoteResult } from "../hosts/ssh.ts";
import { exists, openForWriting } from "../core/files.ts";

/** A file being written as `path.partial`. */
export interface PendingFile {
  /** The final path. */
  readonly path: string;
  /** Where the bytes go; the writer closes it on success and aborts it on failure. */
  readonly writable: WritableStream<Uint8Array>;
  /** Waits for the receiver to finish and renames `.partial` to the final name. */
  commit(): Promise<void>;
  /** Removes `.partial` (best effort; never throws). */
  discard(): Promise<void>;
}

/** The operations a target module needs; paths are in the destination's own syntax. */
export interface Destination {
  /** `ssh://user@host:port/path` or the local directory, for messages. */
  readonly label: string;
  /** The base path given with `--dest`. */
  readonly root: string;
  /** Whether the destination is a remote host (registration needs one). */
  readonly remote: boolean;
  /** The shell that runs commands there (`local`: none, this machine's file system). */
  readonly shell: "local" | "posix" | "powershell";
  /** Joins path components. */
  join(dir: string, ...names: string[]): string;
  mkdirp(path: string): Promise<void>;
  /** Names in `dir` (empty when it does not exist). */
  list(dir: string): Promise<string[]>;
  /** Starts writing `path.partial`. */
  create(path: string): Promise<PendingFile>;
  /**
   * Starts writing over the existing `path` in place (a block device: there
   * is no `.partial` to rename; `commit` waits for the data to be written,
   * `discard` stops the writer and leaves what it wrote).
   */
  overwrite(path: string): Promise<PendingFile>;
  /** Writes a small file completely: `.partial`, then rename. */
  writeFile(path: string, bytes: Uint8Array): Promise<void>;
  /** Copies a file that already exists on the destination; false when `from` is missing. */
  copy(from: string, to: string): Promise<boolean>;
  /** Removes files (best effort). */
  remove(paths: string[]): Promise<void>;
  /** Runs a program on the host (remote destinations only). */
  exec(argv: string[]): Promise<RemoteResult>;
  close(): Promise<void>;
}

/** A parsed `--dest`. */
export type DestSpec =
  | { kind: "local"; dir: string }
  | { kind: "ssh"; user: string; host: string; port: number; path: string };

/**
 * Parses `--dest`: `ssh://user@host[:port]/path` (Windows hosts:
 * `ssh://user@host/D:/VMs`) or a local directory (made absolute).
 */
export function parseDest(text: string): DestSpec {
  if (!text.startsWith("ssh://")) {
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
      throw new UsageError((p) =>
        `restore: ${p("dest")} '${text}' must be ssh://user@host[:port]/path or a local directory`
      );
    }
    return { kind: "local", dir: resolve(text) };
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError((p) => `restore: ${p("dest")} '${text}' is not a valid ssh:// URL`);
  }
  if (url.password) {
    throw new UsageError((p) =>
      `restore: ${p("dest")} must not hold a password: use ${p("dest_ssh_key")}`
    );
  }
  if (!url.hostname) throw new UsageError((p) => `restore: ${p("dest")} '${text}' names no host`);
  const port = url.port ? Number(url.port) : 22;
  let path = decodeURIComponent(url.pathname) || "/";
  if (/^\/[A-Za-z]:([\\/]|$)/.test(path)) path = path.slice(1); // /D:/VMs -> D:/VMs
  return {
    kind: "ssh",
    user: decodeURIComponent(url.username) || "root",
    host: url.hostname.replace(/^\[|\]$/g, ""),
    port,
    path,
  };
}

/** A directory on this machine. */
export class LocalDestination implements Destination {
  readonly remote = false;
  readonly shell = "local";
  readonly root: string;
  readonly label: string;

  constructor(dir: string) {
    this.root = dir;
    this.label = dir;
  }

  join(dir: string, ...names: string[]): string {
    return join(dir, ...names);
  }

  async mkdirp(path: string): Promise<void> {
    try {
      await Deno.mkdir(path, { recursive: true });
    } catch (err) {
      throw wrapError(err, TargetError, `cannot create directory ${path}: ${describeError(err)}`);
    }
  }

  async list(dir: string): Promise<string[]> {
    const names: string[] = [];
    try {
      for await (const e of Deno.readDir(dir)) names.push(e.name);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) {
        throw wrapError(err, TargetError, `cannot list ${dir}: ${describeError(err)}`);
      }
    }
    return names;
  }

  async create(path: string): Promise<PendingFile> {
    const partial = `${path}.partial`;
    let file: Deno.FsFile;
    try {
      file = await Deno.open(partial, { write: true, create: true, truncate: true });
    } catch (err) {
      throw wrapError(err, TargetError, `cannot create ${partial}: ${describeError(err)}`);
    }
    return {
      path,
      writable: file.writable,
      commit: async () => {
        try {
          await Deno.rename(partial, path);
        } catch (err) {
          throw wrapError(
            err,
            TargetError,
            `cannot rename ${partial} to ${path}: ${describeError(err)}`,
          );
        }
      },
      discard: () => Deno.remove(partial).catch(() => {}),
    };
  }

  async overwrite(path: string): Promise<PendingFile> {
    const file = await openForWriting(path, { write: true });
    return {
      path,
      writable: file.writable,
      commit: () => Promise.resolve(),
      discard: () => Promise.resolve(),
    };
  }

  async writeFile(path: string, bytes: Uint8Array): Promise<void> {
    try {
      await Deno.writeFile(`${path}.partial`, bytes);
      await Deno.rename(`${path}.partial`, path);
    } catch (err) {
      await Deno.remove(`${path}.partial`).catch(() => {});
      throw wrapError(err, TargetError, `cannot write ${path}: ${describeError(err)}`);
    }
  }

  async copy(from: string, to: string): Promise<boolean> {
    try {
      await Deno.copyFile(from, to);
      return true;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound && !(await exists(dirname(to)))) {
        throw wrapError(err, TargetError, `cannot copy to ${to}: ${describeError(err)}`);
      }
      if (err instanceof Deno.errors.NotFound) return false;
      throw wrapError(err, TargetError, `cannot copy ${from} to ${to}: ${describeError(err)}`);
    }
  }

  async remove(paths: string[]): Promise<void> {
    for (const p of paths) await Deno.remove(p).catch(() => {});
  }

  exec(argv: string[]): Promise<RemoteResult> {
    return Promise.reject(
      new UsageError((p) =>
        `restore: cannot run ${argv[0]} for a local ${p("dest")}: ${p("register")} needs ssh://`
      ),
    );
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
