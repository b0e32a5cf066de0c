/**
 * Long-running dirtybit processes started on behalf of a short one (a
 * Bacula job that makes sure a replication receiver or daemon runs). Unlike
 * helper processes they must outlive their starter: each runs in a session
 * of its own (setsid), stdio to a log file, and is named by a pid file that
 * records its stamp and command line, so a later job recognises it (pid
 * reuse included) instead of starting a second one.
 *
 * @module
 */
import { basename, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { describeError, UsageError, wrapError } from "./errors.ts";
import { processInfo, type ProcessStamp } from "./process.ts";
import { readJsonFile, writeFileAtomic } from "./atomic_file.ts";
import { delay } from "./async.ts";
import { makeDirectory } from "./files.ts";

/** How to run dirtybit itself: the compiled binary, or Deno with this tree's main.ts. */
export function selfCommand(): string[] {
  const exe = Deno.execPath();
  if (!/^deno(\.exe)?$/.test(basename(exe))) return [exe];
  return [exe, "run", "-A", fileURLToPath(new URL("../../main.ts", import.meta.url))];
}

/** What to run and how to tell it is up. */
export interface DetachedSpec {
  /** Files `BASE.pid` and `BASE.log`. */
  base: string;
  /** The whole command line, program first. */
  argv: string[];
  /** A line of the log that says the process is ready. */
  ready: RegExp;
  /** How long it may take to get ready (default 30 s). */
  timeoutMs?: number;
  /** Runs before a start (writing its configuration), not when it runs already. */
  prepare?: () => Promise<void>;
}

/** A running detached process. */
export interface DetachedProcess {
  pid: number;
  pidFile: string;
  logFile: string;
  /** It was running already; nothing was started. */
  already: boolean;
}

interface PidRecord extends ProcessStamp {
  argv: string[];
  startedAt: string;
}

const sameArgv = (a: string[], b: string[]) =>
  a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * Makes sure the process of `spec` runs: the one its pid file names if that
 * still runs with the same command line, else a new one, once its log shows
 * `ready`. A live process of that pid file with another command line is
 * refused (stopping it is the operator's call).
 */
export async function ensureDetached(spec: DetachedSpec): Promise<DetachedProcess> {
  const pidFile = `${spec.base}.pid`;
  const logFile = `${spec.base}.log`;
  const record = await readJsonFile<PidRecord>(pidFile).catch(() => null);
  if (record) {
    const info = await processInfo(record.pid);
    if (info?.start === record.start) {
      if (sameArgv(info.argv, spec.argv)) {
        return { pid: record.pid, pidFile, logFile, already: true };
      }
      throw new UsageError(
        `${pidFile}: pid ${record.pid} runs '${info.argv.join(" ")}', not the process these ` +
          `parameters ask for: stop it (kill ${record.pid}) and run the job again`,
      );
    }
  }
  await makeDirectory(dirname(spec.base), "the directory of its pid file and log");
  await spec.prepare?.();
  const offset = await Deno.stat(logFile).then((s) => s.size, () => 0);
  // `exec setsid` keeps the pid: the shell was no process group leader.
  const child = new Deno.Command("sh", {
    args: [
      "-c",
      'log=$1; shift; exec setsid "$@" >>"$log" 2>&1 </dev/null',
      "sh",
      logFile,
      ...spec.argv,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let exited: Deno.CommandStatus | undefined;
  child.status.then((s) => (exited = s));
  const deadline = Date.now() + (spec.timeoutMs ?? 30_000);
  for (;;) {
    // Taken before the read, so a process seen exited has all its output in the log read.
    const ended = exited;
    const log = await readFrom(logFile, offset);
    if (spec.ready.test(log)) break;
    if (ended || Date.now() > deadline) {
      if (!ended) child.kill("SIGTERM");
      const last = log.trim().split("\n").slice(-3).join(" | ") || "no output";
      throw new UsageError(
        `${spec.argv.slice(-6).join(" ")}: ${
          ended ? `exited with code ${ended.code}` : "not ready in time"
        }: ${last} (log ${logFile})`,
      );
    }
    await delay(100);
  }
  const info = await processInfo(child.pid);
  if (!info || !sameArgv(info.argv, spec.argv)) {
    throw new UsageError(`pid ${child.pid} is not the process started (log ${logFile})`);
  }
  child.unref();
  await writeFileAtomic(
    pidFile,
    JSON.stringify(
      {
        pid: child.pid,
        start: info.start,
        argv: spec.argv,
        startedAt: new Date().toISOString(),
      } satisfies PidRecord,
    ),
  );
  return { pid: child.pid, pidFile, logFile, already: false };
}

async function readFrom(path: string, offset: number): Promise<string> {
  try {
    return new TextDecoder().decode((await Deno.readFile(path)).subarray(offset));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return "";
    throw wrapError(err, UsageError, `log ${path} cannot be read: ${describeError(err)}`);
  }
}
