/**
 * A {@link Destination} on a target host over SSH. Commands ride on an
 * {@link SshHost} (host key verified, key auth); disk data goes through a
 * dedicated `ssh` whose stdin the remote `cat > NAME.partial` (or PowerShell
 * equivalent) reads, so nothing disk-sized is staged on either side.
 *
 * @module
 */
import { CancelledError, describeError, TargetError } from "../core/errors.ts";
import { type RemoteResult, SshHost, type SshTarget } from "../hosts/ssh.ts";
import type { Destination, PendingFile } from "./destination.ts";
import type { RemoteDialect } from "./remote_dialect.ts";

/** How to reach the target host (`--dest` plus the SSH flags). */
export interface RemoteDestinationOptions {
  target: SshTarget;
  /** Base path on the host (from `--dest`). */
  root: string;
  dialect: RemoteDialect;
  /** Called with the pid of each data `ssh` (tests interrupt a push through it). */
  onDataPid?: (pid: number) => void;
}

function lastLine(text: string): string {
  return text.trim().split("\n").map((l) => l.trim()).filter(Boolean).at(-1) ?? "";
}

/**
 * The data channel: `ssh` started with the same security options the
 * {@link SshHost} connection uses (strict host key checking against the
 * given known_hosts, key only, no user config), stdin streamed.
 */
function sshArgs(t: SshTarget): string[] {
  const verify = t.verifyHostKey ?? true;
  return [
    "-F",
    "none",
    "-p",
    String(t.port ?? 22),
    "-i",
    t.keyPath,
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "IdentityAgent=none",
    "-o",
    "BatchMode=yes",
    "-o",
    "LogLevel=ERROR",
    "-o",
    verify ? "StrictHostKeyChecking=yes" : "StrictHostKeyChecking=no",
    ...(verify
      ? (t.knownHostsPath
        ? ["-o", `UserKnownHostsFile=${t.knownHostsPath}`, "-o", "GlobalKnownHostsFile=none"]
        : [])
      : ["-o", "UserKnownHostsFile=/dev/null"]),
    "-c",
    "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com",
    `${t.user ?? "root"}@${t.host}`,
  ];
}

/** Target host over SSH. */
export class RemoteDestination implements Destination {
  readonly remote = true;
  readonly shell: "posix" | "powershell";
  readonly root: string;
  readonly label: string;
  readonly #host: SshHost;
  readonly #options: RemoteDestinationOptions;
  readonly #dialect: RemoteDialect;

  private constructor(host: SshHost, options: RemoteDestinationOptions) {
    this.#host = host;
    this.#options = options;
    this.#dialect = options.dialect;
    this.shell = options.dialect.name;
    this.root = options.root;
    this.label = `ssh://${host.name}${options.root.startsWith("/") ? "" : "/"}${options.root}`;
  }

  /** Connects (verifying the host key); a TargetError names what failed. */
  static async connect(options: RemoteDestinationOptions): Promise<RemoteDestination> {
    let host: SshHost;
    try {
      host = await SshHost.connect(options.target);
    } catch (err) {
      if (err instanceof CancelledError) throw err;
      throw new TargetError(`target host: ${describeError(err)}`);
    }
    return new RemoteDestination(host, options);
  }

  join(dir: string, ...names: string[]): string {
    return names.reduce((d, n) => this.#dialect.join(d, n), dir);
  }

  async #checked(command: string, what: string, stdin?: Uint8Array): Promise<RemoteResult> {
    let result: RemoteResult;
    try {
      result = await this.#host.runScript(command, { stdin, timeoutMs: 120_000 });
    } catch (err) {
      throw new TargetError(`${what} on ${this.#host.target.host}: ${describeError(err)}`);
    }
    if (result.code !== 0) {
      throw new TargetError(
        `${what} on ${this.#host.target.host} failed (exit ${result.code}): ` +
          (lastLine(result.stderr) || lastLine(result.stdout) || "no error text"),
      );
    }
    return result;
  }

  async mkdirp(path: string): Promise<void> {
    await this.#checked(this.#dialect.mkdirp(path), `creating ${path}`);
  }

  async list(dir: string): Promise<string[]> {
    const out = await this.#checked(this.#dialect.list(dir), `listing ${dir}`);
    return out.stdout.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  }

  create(path: string): Promise<PendingFile> {
    const partial = `${path}.partial`;
    const child = new Deno.Command("ssh", {
      args: [...sshArgs(this.#options.target), "--", this.#dialect.receive(partial)],
      stdin: "piped",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.#options.onDataPid?.(child.pid);
    const stderr = new Response(child.stderr).text().catch(() => "");
    const finished = child.status.then(async (s) => ({ code: s.code, stderr: await stderr }));
    const host = this.#host.target.host;
    const failure = (r: { code: number; stderr: string }) =>
      new TargetError(
        `writing ${partial} on ${host} failed (exit ${r.code}): ${
          lastLine(r.stderr) || "connection lost"
        }`,
      );
    // Ends the stream with the receiver's error instead of a bare "Broken pipe".
    const stdin = child.stdin.getWriter();
    const writable = new WritableStream<Uint8Array>({
      write: async (chunk) => {
        try {
          await stdin.write(chunk);
        } catch {
          throw failure(await finished);
        }
      },
      close: async () => {
        await stdin.close().catch(() => {});
        const r = await finished;
        if (r.code !== 0) throw failure(r);
      },
      abort: async () => {
        await stdin.abort().catch(() => {});
        try {
          child.kill("SIGTERM");
        } catch { /* gone */ }
        await finished;
      },
    });
    return Promise.resolve({
      path,
      writable,
      commit: async () => {
        const r = await finished;
        if (r.code !== 0) throw failure(r);
        await this.#checked(this.#dialect.rename(partial, path), `renaming ${partial}`);
      },
      discard: async () => {
        try {
          child.kill("SIGTERM");
        } catch { /* gone */ }
        await finished;
        await this.remove([partial]);
      },
    });
  }

  async writeFile(path: string, bytes: Uint8Array): Promise<void> {
    const partial = `${path}.partial`;
    try {
      await this.#checked(this.#dialect.receive(partial), `writing ${partial}`, bytes);
      await this.#checked(this.#dialect.rename(partial, path), `renaming ${partial}`);
    } catch (err) {
      await this.remove([partial]);
      throw err;
    }
  }

  async copy(from: string, to: string): Promise<boolean> {
    const r = await this.#host.runScript(this.#dialect.copy(from, to)).catch((err) => {
      throw new TargetError(`copying ${from} on ${this.#host.target.host}: ${describeError(err)}`);
    });
    return r.code === 0;
  }

  async remove(paths: string[]): Promise<void> {
    if (paths.length === 0) return;
    await this.#host.runScript(this.#dialect.remove(paths)).catch(() => {});
  }

  async exec(argv: string[]): Promise<RemoteResult> {
    try {
      return await this.#host.runScript(this.#dialect.exec(argv), { timeoutMs: 300_000 });
    } catch (err) {
      throw new TargetError(`${argv[0]} on ${this.#host.target.host}: ${describeError(err)}`);
    }
  }

  close(): Promise<void> {
    return this.#host.close();
  }
}
