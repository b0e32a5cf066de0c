/**
 * One backend session (docs/ptcomm.md §3): handshake, Job and Params
 * blocks, the job start command dispatched to backup, estimate, listing,
 * query or restore (or, with `mode=`, a replication job: modes.ts), then
 * the end of the session. Failures are reported with
 * `A` (never `E` where an item or DATA is expected, docs/ptcomm.md §6); afterwards the
 * plugin closes the pipes or sends END/T, which the session waits for.
 *
 * @module
 */
import {
  CancelledError,
  describeError,
  InputError,
  typedError,
  UsageError,
} from "../core/errors.ts";
import { describeParams, type Params, parseParamEntries } from "../params/params.ts";
import { Channel, TerminateRequest } from "./channel.ts";
import { type JobInfo, parseJobInfo } from "./job_info.ts";
import { PLUGIN_NAME } from "./names.ts";
import type { BackendEngine } from "./engine_port.ts";
import { type JobContext, runBackup, runEstimate, runListing, runQuery } from "./backup.ts";
import { runRestore } from "./restore.ts";
import { replicationMode, runModeEstimate, runModeJob } from "./modes.ts";
import type { BackendLog } from "./log.ts";
import type { PacketReader, PacketWriter } from "./ptcomm.ts";

/** What a session needs from its process. */
export interface SessionOptions {
  reader: PacketReader;
  writer: PacketWriter;
  engine: BackendEngine;
  log: BackendLog;
  /** Fires on SIGUSR1. */
  cancel: AbortSignal;
  /**
   * Where the defaults of state_dir, log_file and staging_dir go when the Job
   * block has no WorkingDir (Bacula 13); with one, they go under it.
   */
  defaultWorkDir: string;
}

/** Splits a Params line at the first `=` (Bacula sends a bare key as `key=1`). */
function paramEntry(line: string): [string, string] {
  const eq = line.indexOf("=");
  if (eq <= 0) throw new UsageError(`plugin parameter '${line.split("=")[0]}' is not key=value`);
  return [line.slice(0, eq), line.slice(eq + 1)];
}

/** How a job start command is served. */
type Handler = (ctx: JobContext) => Promise<void>;

const START_COMMANDS: Record<
  string,
  { type: JobInfo["type"]; handler: Handler; end: "END" | "T" }
> = {
  BackupStart: { type: "B", handler: runBackup, end: "END" },
  EstimateStart: { type: "E", handler: runEstimate, end: "END" },
  ListingStart: { type: "E", handler: runListing, end: "END" },
  QueryStart: { type: "E", handler: runQuery, end: "T" },
  RestoreStart: { type: "R", handler: runRestore, end: "END" },
};

/**
 * The handler of a start command in a replication job (`mode=`): Backup and
 * Estimate run the mode; a Restore writes its records back like any job's.
 */
function modeHandler(start: string, handler: Handler, params: Params): Handler {
  if (!replicationMode(params)) return handler;
  if (start === "BackupStart") return runModeJob;
  if (start === "EstimateStart") return runModeEstimate;
  if (start === "RestoreStart") return handler;
  throw new UsageError(
    `mode=${params.mode}: a replication job has no ${
      start === "ListingStart" ? "listing" : "query"
    }; its records are in the catalog (list or restore them)`,
  );
}

/** Runs the session to its end and returns the process exit code. */
export async function runSession(options: SessionOptions): Promise<number> {
  const ch = new Channel(options.reader, options.writer, options.log, options.cancel);
  // A T as the very first packet (the plugin ending before any job) is a clean end.
  let done = true;
  try {
    await handshake(ch);
    done = false;
    await ch.expectWord("Job");
    const job = parseJobInfo(await ch.block("Job"));
    ch.log(`job ${job.name} id=${job.jobId} type=${job.type} level=${job.level ?? "-"}`);
    await ch.eod();
    await ch.expectWord("Params");
    const params = parseParamEntries((await ch.block("Params")).map(paramEntry));
    const workDir = job.workingDir ?? options.defaultWorkDir;
    const logFile = params.log_file ?? `${workDir}/dirtybit-backend.log`;
    if (!options.log.open(logFile)) await ch.say("W", `cannot write the log file ${logFile}`);
    ch.log(`params ${describeParams(params)}`);
    await ch.eod();
    const start = await ch.command("a job start command");
    const entry = Object.hasOwn(START_COMMANDS, start) ? START_COMMANDS[start] : undefined;
    if (!entry) throw new InputError(`protocol error: unknown job start command '${start}'`);
    if (entry.type !== job.type) {
      throw new InputError(`protocol error: ${start} in a job of Type=${job.type}`);
    }
    await modeHandler(start, entry.handler, params)({
      ch,
      job,
      params,
      engine: options.engine,
      workDir,
      started: () => ch.eod(),
    });
    if (entry.end === "END") {
      await ch.expectWord("END");
      await ch.eod();
    }
    done = true;
    await ch.expectTerminate();
    ch.log("session ended");
    return 0;
  } catch (err) {
    return await fail(ch, err, done);
  }
}

async function handshake(ch: Channel): Promise<void> {
  const hello = await ch.command("Hello");
  const m = /^Hello (\S+) (\S+)$/.exec(hello);
  if (!m) {
    throw new InputError(
      `protocol error: expected 'Hello ${PLUGIN_NAME} API', got '${hello.slice(0, 60)}'`,
    );
  }
  if (m[1] !== PLUGIN_NAME) {
    throw new UsageError(
      `this backend serves the '${PLUGIN_NAME}' plugin, not '${
        m[1]
      }': check the .so's backend name`,
    );
  }
  ch.log(`hello from plugin ${m[1]} api ${m[2]}`);
  await ch.send("Hello Bacula");
}

/** Reports a failure with `A` (unless the plugin is gone) and waits for the plugin to let go. */
async function fail(ch: Channel, err: unknown, done: boolean): Promise<number> {
  if (err instanceof TerminateRequest) {
    ch.log(done ? "session ended" : "plugin sent T before the job ended");
    return done ? 0 : 1;
  }
  if (err instanceof CancelledError || ch.signal.aborted) {
    ch.log(`cancelled: ${describeError(ch.signal.reason ?? err)}`);
    return new CancelledError("").exitCode;
  }
  const typed = typedError(err);
  const text = typed ? describeError(typed) : `internal error: ${describeError(err)}`;
  if (!typed && err instanceof Error) ch.log(err.stack ?? text);
  try {
    await ch.say("A", text);
    await drain(ch);
  } catch (e) {
    ch.log(`after failure: ${describeError(e)}`);
  }
  return typed ? typed.exitCode : 70;
}

/** After a failure: answer END if it comes, stop at T, end of input, cancel or garbage. */
async function drain(ch: Channel): Promise<void> {
  for (;;) {
    let p;
    try {
      p = await ch.next();
    } catch {
      return;
    }
    if (p === null) return;
    if (p.kind === "C" && new TextDecoder().decode(p.payload).trim() === "END") await ch.eod();
  }
}
