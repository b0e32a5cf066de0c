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
import type { RemoteResult, RunOptions } from "./ssh.ts";

/** Where commands run: this machine or a host over SSH. */
export interface HostShell {
  run(argv: string[], options?: RunOptions): Promise<RemoteResult>;
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
  ) {}

  /**
   * Finds a domain by name or UUID. SourceError naming the domain when
   * libvirt does not know it, or naming libvirt when it does not answer.
   */
  static async open(shell: HostShell, uri: string, nameOrUuid: string): Promise<VirshDomain> {
    // dominfo: name and UUID in one command (over SSH each command is a round trip).
    const r = await shell.run(["virsh", "-q", "-c", uri, "dominfo", nameOrUuid], {
      timeoutMs: 30_000,
    });
    if (r.code !== 0) {
      if (/failed to get domain|Domain not found|no domain with matching/i.test(r.stderr)) {
        throw new SourceError(
          `domain ${nameOrUuid} is not defined on ${uri}; list the domains with 'virsh -c ${uri} list --all'`,
        );
      }
      throw new SourceError(
        `virsh -c ${uri} failed: ${oneLine(r.stderr) || "no error text"}; is libvirtd running?`,
      );
    }
    const field = (key: string) => r.stdout.match(new RegExp(`^${key}:\\s*(.*)$`, "m"))?.[1].trim();
    const name = field("Name");
    const uuid = field("UUID");
    if (!name || !uuid) throw new SourceError(`virsh dominfo ${nameOrUuid} shows no name or UUID`);
    return new VirshDomain(shell, uri, name, uuid);
  }

  /** `virsh ARGS...` on this domain's connection; SourceError quoting virsh's error. */
  run(args: string[], timeoutMs = 120_000): Promise<string> {
    return virsh(this.shell, this.uri, args, timeoutMs);
  }

  async state(): Promise<DomainRunState> {
    return (await this.run(["domstate", this.uuid])).trim();
  }

  /** The live definition (running) or the persistent one (`inactive`). */
  dumpXml(inactive = false): Promise<string> {
    return this.run(["dumpxml", ...(inactive ? ["--inactive"] : []), this.uuid]);
  }

  async disks(): Promise<DomainDisk[]> {
    return parseDomainDisks(await this.dumpXml());
  }

  /** Capacity (virtual size) of a disk in bytes. */
  async capacity(target: string): Promise<number> {
    const out = await this.run(["domblkinfo", this.uuid, target]);
    const m = out.match(/^Capacity:\s*(\d+)/m);
    if (!m) throw new SourceError(`virsh domblkinfo ${this.name} ${target} shows no capacity`);
    return Number(m[1]);
  }

  /** The domain's checkpoints, parents before children. */
  async checkpoints(): Promise<CheckpointInfo[]> {
    const names = (await this.run(["checkpoint-list", this.uuid, "--name", "--topological"]))
      .split("\n").map((l) => l.trim()).filter(Boolean);
    return await Promise.all(
      names.map(async (n) =>
        parseCheckpoint(await this.run(["checkpoint-dumpxml", this.uuid, n, "--no-domain"]))
      ),
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
    const r = await this.shell.run(["virsh", "-c", this.uri, "backup-dumpxml", this.uuid], {
      timeoutMs: 60_000,
    });
    return r.code === 0 ? r.stdout : undefined;
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
  const r = await shell.run(["virsh", "-c", uri, ...args], { timeoutMs });
  if (r.code !== 0) {
    throw new SourceError(
      `virsh ${args[0]} failed: ${oneLine(r.stderr) || oneLine(r.stdout) || `exit ${r.code}`}`,
    );
  }
  return r.stdout;
}

function oneLine(s: string): string {
  return s.trim().split("\n").map((l) => l.trim().replace(/^error:\s*/, "")).filter(Boolean)
    .join("; ").slice(0, 300);
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
 * NBD socket there and open the files libvirt makes. A `parent` this makes
 * (or `traversable`) is made mode 0755: QEMU must reach into it.
 */
export async function makeQemuDir(
  shell: HostShell,
  parent: string,
  dir: string,
  domain: string,
  traversable: boolean,
): Promise<void> {
  const script = [
    'made=0; [ -d "$1" ] || made=1',
    'mkdir -p "$1"',
    'if [ "$made" = 1 ] || [ "$4" = yes ]; then chmod 0755 "$1"; fi',
    'mkdir -m 0700 "$2"',
    'pid=$(cat "/run/libvirt/qemu/$3.pid" 2>/dev/null) || exit 0', // qemu:///session: our own user
    'chown "$(stat -c %u:%g "/proc/$pid")" "$2"',
  ].join(" && ");
  const r = await shell.run(
    ["sh", "-c", script, "sh", parent, dir, domain, traversable ? "yes" : "no"],
  );
  if (r.code !== 0) throw new SourceError(`cannot make ${dir}: ${oneLine(r.stderr)}`);
}

/** Removes a directory tree on the shell's machine (best effort). */
export async function removeHostDir(shell: HostShell, dir: string): Promise<void> {
  await shell.run(["rm", "-rf", "--", dir]);
}
