/**
 * A {@link Destination} on a target host over SSH. Commands and disk data
 * ride on one {@link SshHost} connection (host key verified, key auth); a
 * disk streams into the stdin of a remote `cat > NAME.partial` (or its
 * PowerShell equivalent, or `dd` onto a volume), so nothing disk-sized is
 * staged on either side.
 *
 * @module
 */
import { CancelledError, describeError, TargetError, wrapError } from "../core/errors.ts";
import { type RemoteProcess, type RemoteResult, SshHost, type SshTarget } from "../hosts/ssh.ts";
import type { Destination, PendingFile } from "./destination.ts";
import type { RemoteDialect } from "./remote_dialect.ts";

/** How to reach the target host (`--dest` plus the SSH flags). */
export interface RemoteDestinationOptions {
  target: SshTarget;
  /** Base path on the host (from `--dest`). */
  root: string;
  dialect: RemoteDialect;
}

/** How long a stopped receiver gets to finish writing what it has before it is killed. */
const STOP_GRACE_MS = 30_000;

function lastLine(text: string): string {
  return text.trim().split("\n").map((l) => l.trim()).filter(Boolean).at(-1) ?? "";
}

/** Target host over SSH. */
export class RemoteDestination implements Destination {
  readonly remote = true;
  readonly shell: "posix" | "powershell";
  readonly root: string;
  readonly label: string;
  readonly #host: SshHost;
  readonly #dialect: RemoteDialect;

  private constructor(host: SshHost, options: RemoteDestinationOptions) {
    this.#host = host;
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
      throw wrapError(err, TargetError, `target host: ${describeError(err)}`);
    }
    return new RemoteDestination(host, options);
  }

  join(dir: string, ...names: string[]): string {
    return names.reduce((d, n) => this.#dialect.join(d, n), dir);
  }

  /**
   * Runs one command line. POSIX hosts get {@link SshHost.runScript}, which
   * bounds it on the host with `timeout ... sh -c`; Windows OpenSSH hands the
   * line to `cmd.exe`, which has neither, so there the line is sent as it is
   * and the deadline stops the local client.
   */
  async #run(command: string, timeoutMs: number, stdin?: Uint8Array): Promise<RemoteResult> {
    if (this.#dialect.name === "posix") return this.#host.runScript(command, { stdin, timeoutMs });
    const proc = this.#host.spawnScript(command);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      proc.kill();
    }, timeoutMs);
    try {
      const writer = proc.stdin.getWriter();
      if (stdin) await writer.write(stdin).catch(() => {});
      await writer.close().catch(() => {});
      const result = await proc.status;
      if (timedOut) {
        throw new TargetError(`timed out after ${timeoutMs} ms: ${command.slice(0, 60)}`);
      }
      return result;
    } finally {
      clearTimeout(timer);
    }
  }

  async #checked(command: string, what: string, stdin?: Uint8Array): Promise<RemoteResult> {
    let result: RemoteResult;
    try {
      result = await this.#run(command, 120_000, stdin);
    } catch (err) {
      throw wrapError(
        err,
        TargetError,
        `${what} on ${this.#host.target.host}: ${describeError(err)}`,
      );
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
    const stream = this.#stream(this.#dialect.receive(partial), partial);
    return Promise.resolve({
      path,
      writable: stream.writable,
      commit: async () => {
        await stream.done();
        await this.#checked(this.#dialect.rename(partial, path), `renaming ${partial}`);
      },
      discard: async () => {
        await stream.stop();
        await this.remove([partial]);
      },
    });
  }

  overwrite(path: string): Promise<PendingFile> {
    const stream = this.#stream(this.#dialect.overwrite(path), path);
    return Promise.resolve({
      path,
      writable: stream.writable,
      commit: () => stream.done(),
      discard: () => stream.stop(),
    });
  }

  /**
   * Streams into `command`'s stdin. A failed write ends with the receiver's
   * own error rather than a bare "Broken pipe"; stopping closes its input and
   * waits for it to end, so whatever it wrote to is no longer open.
   */
  #stream(command: string, what: string): {
    writable: WritableStream<Uint8Array>;
    done: () => Promise<void>;
    stop: () => Promise<void>;
  } {
    const host = this.#host.target.host;
    const proc: RemoteProcess = this.#host.spawnScript(command);
    const finished = proc.status.catch((err) => ({
      code: 255,
      stdout: "",
      stderr: describeError(err),
    }));
    const failure = (r: RemoteResult) =>
      new TargetError(
        `writing ${what} on ${host} failed (exit ${r.code}): ${
          lastLine(r.stderr) || "connection lost"
        }`,
      );
    const done = async () => {
      const r = await finished;
      if (r.code !== 0) throw failure(r);
    };
    const stdin = proc.stdin.getWriter();
    const stop = async () => {
      const timer = setTimeout(() => proc.kill(), STOP_GRACE_MS);
      stdin.close().catch(() => {}); // waits for queued writes: a hung link ends at the timer
      await finished;
      clearTimeout(timer);
    };
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
        await done();
      },
      abort: stop,
    });
    return { writable, done, stop };
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
    const r = await this.#run(this.#dialect.copy(from, to), 120_000).catch((err) => {
      throw wrapError(
        err,
        TargetError,
        `copying ${from} on ${this.#host.target.host}: ${describeError(err)}`,
      );
    });
    return r.code === 0;
  }

  async remove(paths: string[]): Promise<void> {
    if (paths.length === 0) return;
    await this.#run(this.#dialect.remove(paths), 120_000).catch(() => {});
  }

  async exec(argv: string[]): Promise<RemoteResult> {
    try {
      return await this.#run(this.#dialect.exec(argv), 300_000);
    } catch (err) {
      throw wrapError(
        err,
        TargetError,
        `${argv[0]} on ${this.#host.target.host}: ${describeError(err)}`,
      );
    }
  }

  close(): Promise<void> {
    return this.#host.close();
  }
}
