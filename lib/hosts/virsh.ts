/**
 * A libvirt domain driven through `virsh -c URI` with libvirt's own API only
 * (domain XML, checkpoints, pull-mode backup jobs, block info): never
 * `qemu-monitor-command`, so libvirt does not mark the domain tainted, and
 * what dirtybit does (checkpoints, backup jobs) is libvirt's own state, seen
 * by `virsh checkpoint-list` and kept across libvirtd restarts.
 *
 * The commands run through a {@link HostShell}: this machine
 * ({@link LocalShell}) or a KVM host over SSH (`SshHost` has the same shape).
 *
 * @module
 */
import { SourceError } from "../core/errors.ts";
import { helperCommand } from "../core/process.ts";
import { type CheckpointInfo, parseCheckpoint } from "./libvirt_xml.ts";
import { type DomainDisk, parseDomainDisks } from "./libvirt.ts";
import type { RemoteResult, RunOptions, ShellProcess } from "./ssh.ts";
import { type BatchResult, oneLine, virshQuote, VirshSession } from "./virsh_session.ts";

/** Where commands run: this machine or a host over SSH. */
export interface HostShell {
  run(argv: string[], options?: RunOptions): Promise<RemoteResult>;
  /** Starts a process with piped stdio, for a {@link VirshSession}; without it, none. */
  spawn?(argv: string[]): ShellProcess;
}

/** Commands on this machine, with the same results and timeouts as over SSH. */
export class LocalShell implements HostShell {
  async run(argv: string[], options: RunOptions = {}): Promise<RemoteResult> {
    let child: Deno.ChildProcess;
    try {
      child = helperCommand(argv[0], {
        args: argv.slice(1),
        stdin: options.stdin ? "piped" : "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        return { code: 127, stdout: "", stderr: `${argv[0]}: not found` };
      }
      throw err;
    }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, options.timeoutMs ?? 60_000);
    try {
      if (options.stdin) {
        const w = child.stdin.getWriter();
        await w.write(options.stdin).catch(() => {});
        await w.close().catch(() => {});
      }
      const out = await child.output();
      const dec = new TextDecoder();
      return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
    } finally {
      clearTimeout(timer);
    }
  }

  spawn(argv: string[]): ShellProcess {
    const child = helperCommand(argv[0], {
      args: argv.slice(1),
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // A session left open never holds the program's exit (it dies with us).
    child.unref();
    return {
      stdin: child.stdin,
      stdout: child.stdout,
      stderr: child.stderr,
      status: child.status,
      kill: () => {
        try {
          child.kill("SIGTERM");
        } catch { /* gone */ }
      },
    };
  }
}

/** Options of {@link VirshDomain.open}. */
export interface OpenOptions {
  /**
   * Runs its commands in one virsh for as long as it is open (a job); the
   * caller then {@link VirshDomain.close}s it.
   */
  session?: boolean;
}

/** libvirt's state of a domain (`virsh domstate`). */
export type DomainRunState = "running" | "shut off" | string;

/** The libvirt connection URI of a local system daemon (what `--connect` defaults to). */
export const SYSTEM_URI = "qemu:///system";

/** One domain on one libvirt connection. */
export class VirshDomain {
  private constructor(
    readonly shell: HostShell,
    readonly uri: string,
    /** The domain's name (also when it was found by UUID). */
    readonly name: string,
    readonly uuid: string,
    /** Its state and definitions when it was opened (the live one while it runs). */
    readonly opened: { state: DomainRunState; xml: string; persistentXml: string },
    /** Where its commands run, while it works; else one virsh process per batch. */
    private readonly session?: VirshSession,
  ) {}

  #queued: {
    args: string[];
    done: (result: BatchResult) => void;
    failed: (err: unknown) => void;
  }[] = [];

  /**
   * A command that changes nothing: the ones asked for at once (in the same
   * turn of the event loop) run in one virsh process ({@link virshBatch}).
   */
  private query(args: string[]): Promise<BatchResult> {
    return new Promise((done, failed) => {
      if (this.#queued.push({ args, done, failed }) === 1) setTimeout(() => this.#flush(), 0);
    });
  }

  async #flush(): Promise<void> {
    const batch = this.#queued.splice(0);
    try {
      const commands = batch.map((q) => q.args);
      // They change nothing: after a session broke they may run again.
      const results = await this.session?.run(commands, 120_000) ??
        await virshBatch(this.shell, this.uri, commands, 120_000);
      batch.forEach((q, i) => q.done(results[i]));
    } catch (err) {
      for (const q of batch) q.failed(err);
    }
  }

  /** {@link query}'s output; SourceError quoting virsh's error. */
  private async read(args: string[]): Promise<string> {
    return output(args, await this.query(args));
  }

  /**
   * Finds a domain by name or UUID, with its state and definitions then
   * ({@link opened}). SourceError naming the domain when libvirt does not
   * know it, or naming libvirt when it does not answer.
   */
  static async open(
    shell: HostShell,
    uri: string,
    nameOrUuid: string,
    options: OpenOptions = {},
  ): Promise<VirshDomain> {
    // One batch: dominfo has name and UUID, the rest what every job asks first.
    const first = [
      ["dominfo", nameOrUuid],
      ["domstate", nameOrUuid],
      ["dumpxml", nameOrUuid],
      ["dumpxml", "--inactive", nameOrUuid],
    ];
    const session = options.session && shell.spawn
      ? new VirshSession(shell.spawn(VirshSession.argv(uri)))
      : undefined;
    const answered = await session?.run(first, 30_000);
    if (!answered) await session?.close();
    const results = answered ?? await virshBatch(shell, uri, first, 30_000);
    try {
      return VirshDomain.#opened(shell, uri, nameOrUuid, results, answered && session);
    } catch (err) {
      await session?.close();
      throw err;
    }
  }

  static #opened(
    shell: HostShell,
    uri: string,
    nameOrUuid: string,
    [info, state, xml, persistentXml]: BatchResult[],
    session: VirshSession | undefined,
  ): VirshDomain {
    if (info.error !== undefined) {
      if (/failed to get domain|Domain not found|no domain with matching/i.test(info.error)) {
        throw new SourceError(
          `domain ${nameOrUuid} is not defined on ${uri}; list the domains with 'virsh -c ${uri} list --all'`,
        );
      }
      throw new SourceError(
        `virsh -c ${uri} failed: ${oneLine(info.error) || "no error text"}; is libvirtd running?`,
      );
    }
    const field = (key: string) =>
      info.stdout.match(new RegExp(`^${key}:\\s*(.*)$`, "m"))?.[1].trim();
    const name = field("Name");
    const uuid = field("UUID");
    if (!name || !uuid) throw new SourceError(`virsh dominfo ${nameOrUuid} shows no name or UUID`);
    return new VirshDomain(shell, uri, name, uuid, {
      state: output(["domstate"], state).trim(),
      xml: output(["dumpxml"], xml),
      persistentXml: output(["dumpxml"], persistentXml),
    }, session);
  }

  /** Ends the virsh session, if any (idempotent); the domain still answers after it. */
  async close(): Promise<void> {
    await this.session?.close();
  }

  /** `virsh ARGS...` on this domain's connection; SourceError quoting virsh's error. */
  async run(args: string[], timeoutMs = 120_000): Promise<string> {
    if (this.session && !this.session.broken) {
      const [result] = await this.session.run([args], timeoutMs) ?? [];
      if (result) return output(args, result);
      // It may have run: a command that changes something is not sent twice.
      if (this.session.broken) {
        throw new SourceError(
          `virsh ${args[0]} on ${this.uri}: virsh ended or did not answer within ` +
            `${Math.round(timeoutMs / 1000)} s; check libvirtd`,
        );
      }
    }
    return await virsh(this.shell, this.uri, args, timeoutMs);
  }

  async state(): Promise<DomainRunState> {
    return (await this.read(["domstate", this.uuid])).trim();
  }

  /** The live definition (running) or the persistent one (`inactive`). */
  dumpXml(inactive = false): Promise<string> {
    return this.read(["dumpxml", ...(inactive ? ["--inactive"] : []), this.uuid]);
  }

  async disks(): Promise<DomainDisk[]> {
    return parseDomainDisks(await this.dumpXml());
  }

  /** Capacity (virtual size) of a disk in bytes. */
  async capacity(target: string): Promise<number> {
    const out = await this.read(["domblkinfo", this.uuid, target]);
    const m = out.match(/^Capacity:\s*(\d+)/m);
    if (!m) throw new SourceError(`virsh domblkinfo ${this.name} ${target} shows no capacity`);
    return Number(m[1]);
  }

  /**
   * The domain's checkpoints, parents before children. The XML of those
   * `expected` is read with the list (one virsh process); of others after it.
   */
  async checkpoints(expected: string[] = []): Promise<CheckpointInfo[]> {
    const dump = (n: string) => ["checkpoint-dumpxml", this.uuid, n, "--no-domain"];
    const guessed = [...new Set(expected)];
    const [list, dumps] = await Promise.all([
      this.read(["checkpoint-list", this.uuid, "--name", "--topological"]),
      Promise.all(guessed.map((n) => this.query(dump(n)))),
    ]);
    const read = new Map<string, string>();
    guessed.forEach((n, i) => dumps[i].error === undefined && read.set(n, dumps[i].stdout));
    const names = list.split("\n").map((l) => l.trim()).filter(Boolean);
    return await Promise.all(
      names.map(async (n) => parseCheckpoint(read.get(n) ?? await this.read(dump(n)))),
    );
  }

  /** Deletes a checkpoint; `metadataOnly` leaves the disks' bitmaps (a shut-off domain). */
  async deleteCheckpoint(name: string, metadataOnly = false): Promise<void> {
    await this.run(["checkpoint-delete", this.uuid, name, ...(metadataOnly ? ["--metadata"] : [])]);
  }

  /**
   * Tells libvirt about a checkpoint whose bitmaps were made without it;
   * `validate`: only if the running domain's disks have its bitmaps, enabled.
   */
  async redefineCheckpoint(xmlFile: string, validate = false): Promise<void> {
    await this.run([
      "checkpoint-create",
      this.uuid,
      xmlFile,
      "--redefine",
      ...(validate ? ["--redefine-validate"] : []),
    ]);
  }

  /** Starts a backup job (`backup-begin`), with a new checkpoint if `checkpointFile` is given. */
  async backupBegin(backupFile: string, checkpointFile?: string): Promise<void> {
    await this.run([
      "backup-begin",
      this.uuid,
      backupFile,
      ...(checkpointFile ? [checkpointFile] : []),
    ]);
  }

  /** The running backup job's XML, or undefined when none runs. */
  async backupXml(): Promise<string | undefined> {
    const r = await this.query(["backup-dumpxml", this.uuid]);
    return r.error === undefined ? r.stdout : undefined;
  }

  /** Ends the domain's job (a pull backup ends this way; its scratch files go with it). */
  async abortJob(): Promise<void> {
    await this.run(["domjobabort", this.uuid]);
  }
}

async function virsh(
  shell: HostShell,
  uri: string,
  args: string[],
  timeoutMs = 120_000,
): Promise<string> {
  return output(args, await virshOne(shell, uri, args, timeoutMs));
}

/** A command's output; SourceError quoting its error. */
function output(args: string[], r: BatchResult): string {
  if (r.error !== undefined) throw new SourceError(`virsh ${args[0]} failed: ${r.error}`);
  return r.stdout;
}

async function virshOne(
  shell: HostShell,
  uri: string,
  args: string[],
  timeoutMs: number,
): Promise<BatchResult> {
  const r = await shell.run(["virsh", "-c", uri, ...args], { timeoutMs });
  if (r.code === 0) return { stdout: r.stdout };
  return { stdout: r.stdout, error: oneLine(r.stderr) || oneLine(r.stdout) || `exit ${r.code}` };
}

/**
 * Runs virsh commands one after another in one virsh process: one
 * connection to libvirtd (over SSH one round trip) instead of one each,
 * which is most of what a command costs. virsh goes on after a command
 * fails; a marker line after each command on stdout and on stderr
 * (`echo --err`) tells each command's output and error apart. When the
 * output lacks a marker (a virsh without `echo --err`, one that died), each
 * command runs alone instead.
 */
async function virshBatch(
  shell: HostShell,
  uri: string,
  commands: string[][],
  timeoutMs: number,
): Promise<BatchResult[]> {
  const alone = () => Promise.all(commands.map((args) => virshOne(shell, uri, args, timeoutMs)));
  if (commands.length === 1) return await alone();
  const mark = `dirtybit-batch-${crypto.randomUUID().slice(0, 8)}`;
  const script = commands.map((args, i) =>
    `${args.map(virshQuote).join(" ")} ; echo ${mark}-${i} ; echo --err ${mark}-${i}`
  ).join(" ; ");
  const r = await shell.run(["virsh", "-c", uri, script], { timeoutMs });
  const out = splitAtMarks(r.stdout, commands.length, (i) => `${mark}-${i}\n`);
  const err = splitAtMarks(r.stderr, commands.length, (i) => `error: ${mark}-${i}\n`);
  if (!out || !err) return await alone();
  return out.map((stdout, i) => {
    const error = oneLine(err[i]);
    return error ? { stdout, error } : { stdout };
  });
}

/** `text` cut at each of `count` marker lines, in order; undefined if one is missing. */
function splitAtMarks(
  text: string,
  count: number,
  markOf: (i: number) => string,
): string[] | undefined {
  const parts: string[] = [];
  let from = 0;
  for (let i = 0; i < count; i++) {
    const mark = markOf(i);
    let at = text.indexOf(mark, from);
    while (at > from && text[at - 1] !== "\n") at = text.indexOf(mark, at + 1);
    if (at < 0) return undefined;
    parts.push(text.slice(from, at));
    from = at + mark.length;
  }
  return parts;
}

/** Defines a domain from an XML file and opens it. */
export async function defineDomain(
  shell: HostShell,
  uri: string,
  xmlFile: string,
  name: string,
): Promise<VirshDomain> {
  await virsh(shell, uri, ["define", xmlFile]);
  return await VirshDomain.open(shell, uri, name);
}

/** Writes a text file on the shell's machine (mode 0600). */
export async function writeHostFile(shell: HostShell, path: string, text: string): Promise<void> {
  const r = await shell.run(["sh", "-c", 'umask 077 && cat > "$1"', "sh", path], {
    stdin: new TextEncoder().encode(text),
  });
  if (r.code !== 0) throw new SourceError(`cannot write ${path}: ${oneLine(r.stderr)}`);
}

/**
 * Makes `dir` (mode 0700) inside `parent`, owned by the user the running
 * domain's QEMU runs as (from its pid file), so that QEMU can create its
 * NBD socket there and open the files libvirt makes, and writes `files`
 * into it (mode 0600, as {@link writeHostFile}): one command. A `parent`
 * this makes (or `traversable`) is made mode 0755: QEMU must reach into it.
 */
export async function makeQemuDir(
  shell: HostShell,
  parent: string,
  dir: string,
  domain: string,
  traversable: boolean,
  files: { name: string; text: string }[] = [],
): Promise<void> {
  const script = [
    'made=0; [ -d "$1" ] || made=1',
    'mkdir -p "$1"',
    'if [ "$made" = 1 ] || [ "$4" = yes ]; then chmod 0755 "$1"; fi',
    'mkdir -m 0700 "$2"',
    // qemu:///session: no pid file, QEMU runs as our own user.
    'if pid=$(cat "/run/libvirt/qemu/$3.pid" 2>/dev/null); then ' +
    'chown "$(stat -c %u:%g "/proc/$pid")" "$2"; fi',
    "umask 077",
    "shift 4",
    'while [ $# -gt 0 ]; do printf %s "$2" > "$1" || exit 1; shift 2; done',
  ].join(" && ");
  const r = await shell.run([
    "sh",
    "-c",
    script,
    "sh",
    parent,
    dir,
    domain,
    traversable ? "yes" : "no",
    ...files.flatMap((f) => [`${dir}/${f.name}`, f.text]),
  ]);
  if (r.code !== 0) throw new SourceError(`cannot make ${dir}: ${oneLine(r.stderr)}`);
}

/** Removes a directory tree on the shell's machine (best effort). */
export async function removeHostDir(shell: HostShell, dir: string): Promise<void> {
  await shell.run(["rm", "-rf", "--", dir]);
}
