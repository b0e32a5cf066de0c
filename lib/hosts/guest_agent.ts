/**
 * Quiesce: freeze the guest's file systems through qemu-guest-agent for the
 * point in time, and thaw them on every path.
 *
 * Every freeze is preceded by a thaw guard on the host: a detached process
 * (`setsid sh -c 'sleep N; THAW'`, its own session, so it survives the SSH
 * channel and the death of dirtybit) that thaws the guest after N seconds
 * unless it is disarmed after a successful thaw. So the guest is thawed
 * after an error, a timeout (a freeze may still complete after we gave up
 * waiting, hence the thaw right after a failed freeze), or a kill of the
 * backend, at the latest when the guard fires.
 *
 * The agent is reached through libvirt (`virsh domfsfreeze`/`domfsthaw`,
 * which unlike `qemu-agent-command` do not taint the domain), each call
 * bounded on the host by coreutils `timeout` (see {@link SshHost.run}).
 *
 * @module
 */
import { SourceError, TimeoutError, wrapError } from "../core/errors.ts";
import { SYSTEM_URI } from "./virsh.ts";
import { RemoteTimeoutError, shellCommand, shellQuote, type SshHost } from "./ssh.ts";

/** Freeze and thaw of one guest, as commands run on its host. */
export interface GuestAgent {
  /** Who is frozen, for messages (the domain name). */
  readonly guest: string;
  /** Host command that freezes; prints the number of frozen file systems. */
  readonly freezeArgv: string[];
  /** Host command that thaws; the guard runs it too. */
  readonly thawArgv: string[];
}

/** The guest agent of libvirt domain `domain` (`virsh domfsfreeze`/`domfsthaw`). */
export function libvirtGuestAgent(domain: string): GuestAgent {
  return {
    guest: domain,
    freezeArgv: ["virsh", "-c", SYSTEM_URI, "domfsfreeze", domain],
    thawArgv: ["virsh", "-c", SYSTEM_URI, "domfsthaw", domain],
  };
}

/** Options of {@link withFrozenGuest}. */
export interface QuiesceOptions {
  /** Longest wait for the freeze, ms (default 30000). */
  freezeTimeoutMs?: number;
  /** Longest wait for the thaw, ms (default 30000). */
  thawTimeoutMs?: number;
  /** Seconds after which the host-side guard thaws (default: freeze timeout + 60 s). */
  guardSeconds?: number;
}

/**
 * The guest has no usable agent: libvirt refused before sending anything to
 * the guest ("not connected": not running in the guest; "not configured": no
 * agent channel), so nothing was frozen. Callers may fall back to a
 * crash-consistent point in time with a warning.
 */
export class GuestAgentUnavailableError extends SourceError {}

/** True for libvirt's answers that mean the agent was never reached. */
export function isAgentUnavailable(message: string): boolean {
  return /guest agent is not (connected|configured)/i.test(message);
}

/** Number in agent output such as "Froze 2 filesystem(s)"; 0 if none. */
export function parseFsCount(output: string): number {
  const m = output.match(/(\d+)/);
  return m ? Number(m[1]) : 0;
}

/** Runs `argv` on the host, bounded there and here by `timeoutMs`. */
async function runBounded(host: SshHost, argv: string[], timeoutMs: number): Promise<string> {
  const what = argv.slice(-2).join(" ");
  let result;
  try {
    result = await host.run(argv, { timeoutMs });
  } catch (err) {
    if (err instanceof RemoteTimeoutError) {
      throw new TimeoutError(`${what} timed out after ${Math.ceil(timeoutMs / 1000)} s`, {
        cause: err,
      });
    }
    throw err;
  }
  if (result.code !== 0) {
    const text = (result.stderr || result.stdout).trim().split("\n").filter(Boolean).join("; ");
    throw new SourceError(`${what} failed: ${text || `exit ${result.code}`}`);
  }
  return result.stdout;
}

/**
 * A detached timed thaw on the host. {@link disarm} cancels it; if dirtybit
 * dies first, it fires and thaws (retrying a few times).
 */
export class ThawGuard {
  private constructor(
    readonly host: SshHost,
    readonly pid: number,
    readonly marker: string,
    readonly seconds: number,
  ) {}

  /** Starts the guard: after `seconds`, runs `thawArgv` on the host. */
  static async arm(host: SshHost, thawArgv: string[], seconds: number): Promise<ThawGuard> {
    const marker = `dirtybit-thaw-guard-${crypto.randomUUID()}`;
    // $0 is the marker (so disarm can recognise the process), $1 the delay, $2 the thaw command.
    const body = 'sleep "$1"; for i in 1 2 3 4 5; do eval "$2" && exit 0; sleep 2; done; exit 1';
    const script = `setsid sh -c ${shellQuote(body)} ${marker} ${seconds} ` +
      `${shellQuote(shellCommand(thawArgv))} </dev/null >/dev/null 2>&1 & echo $!`;
    const result = await host.runScript(script, { timeoutMs: 30_000 });
    const pid = Number(result.stdout.trim());
    if (result.code !== 0 || !Number.isInteger(pid) || pid <= 0) {
      throw new SourceError(
        `cannot start the thaw guard on ${host.target.host}: ${
          result.stderr.trim() || "no pid"
        }; ` +
          `not freezing the guest`,
      );
    }
    return new ThawGuard(host, pid, marker, seconds);
  }

  /** True while the guard process still waits or runs on the host. */
  async armed(): Promise<boolean> {
    const r = await this.host.runScript(
      `grep -q ${this.marker} /proc/${this.pid}/cmdline 2>/dev/null`,
      { timeoutMs: 30_000 },
    );
    return r.code === 0;
  }

  /** Kills the guard's process group, if it is still ours (pids are reused). */
  async disarm(): Promise<void> {
    await this.host.runScript(
      `if grep -q ${this.marker} /proc/${this.pid}/cmdline 2>/dev/null; then ` +
        `kill -TERM -${this.pid}; fi; exit 0`,
      { timeoutMs: 30_000 },
    );
  }
}

/**
 * Freezes the guest, runs `fn` (take the point in time there, nothing
 * slow), and thaws. A failed or timed-out freeze is followed by a thaw and
 * throws a {@link SourceError}; the guard stays armed whenever a thaw did not
 * succeed, so the guest is thawed at the latest `guardSeconds` later.
 */
export async function withFrozenGuest<T>(
  host: SshHost,
  agent: GuestAgent,
  fn: (frozenFileSystems: number) => Promise<T>,
  options: QuiesceOptions = {},
): Promise<T> {
  const freezeTimeoutMs = options.freezeTimeoutMs ?? 30_000;
  const thawTimeoutMs = options.thawTimeoutMs ?? 30_000;
  const guardSeconds = options.guardSeconds ?? Math.ceil(freezeTimeoutMs / 1000) + 60;
  const guard = await ThawGuard.arm(host, agent.thawArgv, guardSeconds);
  let count: number;
  try {
    count = parseFsCount(await runBounded(host, agent.freezeArgv, freezeTimeoutMs));
  } catch (err) {
    const detail = (err as Error).message;
    if (isAgentUnavailable(detail)) {
      await guard.disarm();
      throw new GuestAgentUnavailableError(
        `guest agent of ${agent.guest} is not available (${detail}); start qemu-guest-agent ` +
          `in the guest, or back up without quiesce (crash-consistent)`,
      );
    }
    const thawed = await runBounded(host, agent.thawArgv, thawTimeoutMs).then(
      () => true,
      () => false,
    );
    if (thawed) await guard.disarm();
    const after = thawed ? "the guest was thawed" : `the host thaws it within ${guardSeconds} s`;
    throw new SourceError(
      `cannot freeze the file systems of ${agent.guest}: ${detail}; ${after}`,
    );
  }
  let result: T;
  try {
    result = await fn(count);
  } catch (err) {
    await thaw(host, agent, guard, thawTimeoutMs).catch(() => {});
    throw err;
  }
  await thaw(host, agent, guard, thawTimeoutMs);
  return result;
}

async function thaw(host: SshHost, agent: GuestAgent, guard: ThawGuard, timeoutMs: number) {
  try {
    await runBounded(host, agent.thawArgv, timeoutMs);
  } catch (err) {
    throw wrapError(
      err,
      SourceError,
      `cannot thaw the file systems of ${agent.guest}: ${(err as Error).message}; the host ` +
        `retries within ${guard.seconds} s`,
    );
  }
  await guard.disarm();
}
