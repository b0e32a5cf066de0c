/**
 * Two replication "sites" on loopback for tests: a real qemu-storage-daemon
 * as the source, `dirtybit replicate receive` as a child process at the DR
 * site, and helpers to run the sender CLI and compare images.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { StorageDaemon } from "../../lib/qemu/storage_daemon.ts";
import { NbdClient } from "../../lib/nbd/client.ts";
import { Qsd } from "../fixtures/qsd.ts";
import { run } from "../helpers.ts";
import { cliCommand, type CliResult } from "../fixtures/cli.ts";
import { fillRandom } from "../fixtures/bytes.ts";
import { delay } from "../../lib/core/async.ts";
import { processInfo } from "../../lib/core/process.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const CRASH_MAIN = new URL("../fixtures/crash_main.ts", import.meta.url).pathname;

/** Options of a CLI run. */
export interface CliOptions {
  /** Crash point `POINT` or `POINT:N` where the run stops abruptly (tests/fixtures/crash_main.ts). */
  crashAt?: string;
}

/** The `deno run` arguments of `dirtybit ARGS`, with the crash hook when asked. */
function denoArgs(args: string[], options: CliOptions = {}): string[] {
  return options.crashAt
    ? ["run", "-A", CRASH_MAIN, options.crashAt, ...args]
    : ["run", "-A", MAIN, ...args];
}

/** Runs `dirtybit ARGS` to completion. */
export async function cli(args: string[], options: CliOptions = {}): Promise<CliResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: denoArgs(args, options),
    stdin: "null",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/** Starts `dirtybit ARGS` in the background, output discarded (a test kills it). */
export function spawnCli(args: string[]): Deno.ChildProcess {
  return cliCommand(args, { stdin: "null", stdout: "null", stderr: "null" }).spawn();
}

/** A running `dirtybit replicate receive`. */
export class ReceiverProcess {
  #log = "";
  private constructor(
    readonly child: Deno.ChildProcess,
    readonly port: number,
    log: string,
    readonly pump: Promise<void>,
  ) {
    this.#log = log;
  }

  /** Everything it logged so far. */
  get log(): string {
    return this.#log;
  }

  /** Starts a receiver on an ephemeral loopback port and waits until it listens. */
  static async start(
    args: string[],
    options: CliOptions = {},
  ): Promise<ReceiverProcess> {
    const child = new Deno.Command(Deno.execPath(), {
      args: denoArgs(["replicate", "receive", "--listen", "127.0.0.1:0", ...args], options),
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    const deadline = Date.now() + 20_000;
    let holder: ReceiverProcess | undefined;
    while (Date.now() < deadline) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(text);
      if (m) {
        const pump = (async () => {
          for (;;) {
            const r = await reader.read();
            if (r.done) return;
            holder!.#log += r.value;
          }
        })();
        holder = new ReceiverProcess(child, Number(m[1]), text, pump);
        return holder;
      }
    }
    child.kill("SIGKILL");
    await child.status;
    throw new Error(`receiver did not start: ${text}`);
  }

  /** SIGTERM and wait; returns the exit code. */
  async stop(): Promise<number> {
    try {
      this.child.kill("SIGTERM");
    } catch {
      // already exited
    }
    const { code } = await this.child.status;
    await this.pump;
    return code;
  }

  /** Waits for an exit the receiver made by itself (a crash point). */
  async exited(): Promise<number> {
    const { code } = await this.child.status;
    await this.pump;
    return code;
  }
}

/** True when image `image` (of `format`) equals the raw file `raw` (`qemu-img compare`). */
export async function imagesEqual(raw: string, image: string, format = "qcow2"): Promise<boolean> {
  const out = await new Deno.Command("qemu-img", {
    args: ["compare", "-U", "-f", "raw", "-F", format, raw, image],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (out.code > 1) throw new Error(new TextDecoder().decode(out.stderr));
  return out.code === 0;
}

/** The whole two-site bed. */
export class Sites {
  private constructor(
    readonly qsd: Qsd,
    readonly dir: string,
    readonly pskFile: string,
  ) {}

  /** `guestNbd: false`: the source QEMU runs no NBD server of its own (see Qsd). */
  static async start(size: number, options: { guestNbd?: boolean } = {}): Promise<Sites> {
    const qsd = await Qsd.start({
      disks: [{ size, writes: [{ pattern: 0x11, offset: 0, length: 3 << 20 }] }],
      ...options,
    });
    const dir = await Deno.makeTempDir({ prefix: "dirtybit-repl-" });
    const pskFile = join(dir, "psk");
    await Deno.writeTextFile(pskFile, "correct horse battery staple 0123456789\n", { mode: 0o600 });
    return new Sites(qsd, dir, pskFile);
  }

  get replicaDir(): string {
    return join(this.dir, "dr");
  }

  get stateDir(): string {
    return join(this.dir, "state");
  }

  /** Receiver args for this bed. */
  receiverArgs(format = "qcow2"): string[] {
    return [
      "--psk-file",
      this.pskFile,
      "--replica-dir",
      this.replicaDir,
      "--replica-format",
      format,
    ];
  }

  /** `replicate seed|push` arguments for disk 0 of this bed, sending to `port`. */
  senderArgs(sub: "seed" | "push", port: number): string[] {
    return [
      "replicate",
      sub,
      ...this.qsd.sourceArgs([this.qsd.disks[0].node]),
      "--dr",
      `127.0.0.1:${port}`,
      "--psk-file",
      this.pskFile,
      "--name",
      "vda",
      "--state-dir",
      this.stateDir,
    ];
  }

  /** Runs `replicate seed|push` against `port`, without retries. */
  send(
    sub: "seed" | "push",
    port: number,
    extra: string[] = [],
    options: CliOptions = {},
  ): Promise<CliResult> {
    return cli([...this.senderArgs(sub, port), "--retry-count", "0", ...extra], options);
  }

  /** Starts `replicate seed|push` against `port` and SIGKILLs it `ms` later, mid-transfer. */
  async killSenderAfter(
    ms: number,
    sub: "seed" | "push",
    port: number,
    extra: string[] = [],
  ): Promise<void> {
    const child = spawnCli([...this.senderArgs(sub, port), ...extra]);
    await delay(ms);
    child.kill("SIGKILL");
    await child.status;
  }

  /** Writes `length` random (incompressible) bytes at `offset` of disk 0, as the guest would. */
  async randomWrite(offset: number, length: number): Promise<void> {
    await this.qsd.guestPwrite(0, fillRandom(new Uint8Array(length)), offset);
  }

  /** Runs `replicate status ARGS`. */
  cliStatus(args: string[]): Promise<CliResult> {
    return cli(["replicate", "status", ...args]);
  }

  /** The source as the guest sees it now, as a raw file. */
  async snapshot(tag: string): Promise<string> {
    const path = join(this.dir, `source-${tag}.raw`);
    await this.qsd.snapshotImage(0, path);
    return path;
  }

  /** True when the replica (qcow2 or raw) equals the raw file `source`. */
  replicaEquals(source: string, format = "qcow2"): Promise<boolean> {
    return imagesEqual(source, join(this.replicaDir, `vda.${format}`), format);
  }

  async stop(): Promise<void> {
    await this.qsd.stop();
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** A site's VM: a qemu-storage-daemon serving one qcow2 as node disk0 and export vm. */
export class Vm {
  private constructor(readonly daemon: StorageDaemon, readonly dir: string) {}

  static async start(image: string, dir: string): Promise<Vm> {
    await Deno.mkdir(dir, { recursive: true });
    const daemon = await StorageDaemon.start({
      disks: [{ node: "disk0", image, exportName: "vm" }],
      qmpSocket: join(dir, "qmp.sock"),
      nbdSocket: join(dir, "nbd.sock"),
    });
    return new Vm(daemon, dir);
  }

  get qmp(): string {
    return join(this.dir, "qmp.sock");
  }
  get nbd(): string {
    return join(this.dir, "nbd.sock");
  }
  get uri(): string {
    return `nbd+unix:///vm?socket=${this.nbd}`;
  }

  async write(pattern: number, offset: number, length: number): Promise<void> {
    await run("qemu-io", ["-f", "raw", "-c", `write -P ${pattern} ${offset} ${length}`, this.uri]);
  }

  /** Writes `length` random (incompressible) bytes at `offset`, as the guest would. */
  async writeRandom(offset: number, length: number): Promise<void> {
    const client = await NbdClient.connect({ uri: this.uri });
    await client.pwrite(fillRandom(new Uint8Array(length)), offset);
    await client.flush();
    await client.close();
  }

  async snapshot(path: string): Promise<string> {
    await run("qemu-img", ["convert", "-f", "raw", "-O", "raw", this.uri, path]);
    return path;
  }

  stop(): Promise<void> {
    return this.daemon.quit();
  }

  /** SIGKILL, as a crash of the site would. */
  kill(): Promise<void> {
    return this.daemon.kill();
  }
}

export function ok(r: CliResult): CliResult {
  assert.equal(r.code, 0, r.stderr);
  return r;
}

export function refused(r: CliResult, reason: RegExp): void {
  assert.equal(r.code, 2, r.stderr);
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  assert.match(r.stderr, reason);
}

/** Sender flags for disk `vda` of `vm`, to a receiver on `port`, with `retries` (default none). */
export function vmSenderArgs(
  vm: Vm,
  port: number,
  psk: string,
  stateDir: string,
  retries = 0,
): string[] {
  return [
    "--qmp",
    vm.qmp,
    "--node",
    "disk0",
    "--nbd-socket",
    vm.nbd,
    "--dr",
    `127.0.0.1:${port}`,
    "--psk-file",
    psk,
    "--name",
    "vda",
    "--state-dir",
    stateDir,
    "--retry-count",
    String(retries),
    "--retry-delay-ms",
    "5000",
  ];
}

type Stoppable = { stop(): Promise<unknown> };

/** A process a plugin job started detached (not the test's child): SIGTERM, then wait until gone. */
export function detachedProcess(pid: number): Stoppable {
  return {
    async stop() {
      try {
        Deno.kill(pid, "SIGTERM");
      } catch {
        return;
      }
      for (let i = 0; i < 100 && (await processInfo(pid)); i++) await delay(100);
    },
  };
}

/** The detached process of a pid file the backend wrote (see lib/core/detached.ts). */
export async function detachedFromPidFile(path: string): Promise<Stoppable> {
  return detachedProcess(JSON.parse(await Deno.readTextFile(path)).pid);
}

/**
 * The two sites of the failover tests: site A's disk (a 32 MiB qcow2 whose
 * first 4 MiB are 0x11) and state directory, site B's replica directory, one
 * PSK file, and what the test starts (stopped by `cleanup`, newest first).
 */
export class FailoverBed {
  readonly #running: Stoppable[] = [];
  private constructor(readonly root: string, readonly psk: string) {}

  static async create(prefix: string): Promise<FailoverBed> {
    const root = await Deno.makeTempDir({ prefix });
    const psk = join(root, "psk");
    await Deno.writeTextFile(psk, "failover test pre-shared key 0123456789abcdef\n", {
      mode: 0o600,
    });
    const bed = new FailoverBed(root, psk);
    await run("qemu-img", ["create", "-q", "-f", "qcow2", bed.imageA, String(32 << 20)]);
    await run("qemu-io", ["-f", "qcow2", "-c", `write -P 0x11 0 ${4 << 20}`, bed.imageA]);
    return bed;
  }

  get stateA(): string {
    return join(this.root, "a-state");
  }
  get dirB(): string {
    return join(this.root, "b-dr");
  }
  get imageA(): string {
    return join(this.root, "a-disk.qcow2");
  }

  /** Registers `x` to be stopped at cleanup. */
  started = <T extends Stoppable>(x: T): T => (this.#running.push(x), x);

  /** Stops `x` now. */
  stopped = async (x: Stoppable): Promise<void> => {
    this.#running.splice(this.#running.indexOf(x), 1);
    await x.stop();
  };

  /** Forgets `x` without stopping it (the test killed it). */
  forget(x: Stoppable): void {
    this.#running.splice(this.#running.indexOf(x), 1);
  }

  /** Starts a receiver keeping its replicas in `dir`. */
  receiver = (dir: string, options: CliOptions = {}): Promise<ReceiverProcess> =>
    ReceiverProcess.start(["--psk-file", this.psk, "--replica-dir", dir], options).then(
      this.started,
    );

  /** Starts a site's VM on `image`, its sockets in ROOT/`name`. */
  vm = async (image: string, name: string): Promise<Vm> =>
    this.started(await Vm.start(image, join(this.root, name)));

  /** Sender flags for `vm`'s disk to a receiver on `port` (see {@link vmSenderArgs}). */
  sender = (vm: Vm, port: number, stateDir: string, retries = 0): string[] =>
    vmSenderArgs(vm, port, this.psk, stateDir, retries);

  /**
   * After failback exec: B's VM and A's receiver stop, A's disk must equal
   * B's as it was; A's VM starts again and writes 1 MiB at 30 MiB.
   */
  async backAtA(vmB: Vm, recvA: Stoppable): Promise<Vm> {
    const atFailback = await vmB.snapshot(join(this.root, "at-failback.raw"));
    await this.stopped(vmB);
    await this.stopped(recvA);
    assert.ok(await imagesEqual(atFailback, this.imageA), "A's disk is B's at failback");
    const vmA = await this.vm(this.imageA, "vm-a2");
    await vmA.write(0x41, 30 << 20, 1 << 20);
    return vmA;
  }

  async cleanup(): Promise<void> {
    for (const x of this.#running.reverse()) await x.stop().catch(() => {});
    await Deno.remove(this.root, { recursive: true }).catch(() => {});
  }
}
