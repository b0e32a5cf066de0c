/**
 * Progress and log output of long-running commands, on stderr. On a
 * terminal: live lines (one per running disk or stream, and a total)
 * redrawn in place. Otherwise (cron, systemd, bpipe): no redraws, a
 * timestamped progress line every interval. Always, unless quiet: a one-line
 * summary at the end. `--log-file` gets the timestamped lines and messages
 * whatever stderr is. Errors are printed by lib/cli/main.ts, never silenced.
 *
 * @module
 */
import { describeError } from "../core/errors.ts";
import { openForWriting } from "../core/files.ts";
import { flagOf, type FlagTable, integer, type Parsed } from "./args.ts";
import { ProgressView, type Summary, summaryLine } from "./progress_view.ts";

/** The flags every long-running command takes for its output. */
export const PROGRESS_FLAGS = {
  quiet: { type: "boolean" },
  "progress-interval": { type: "string" },
  "log-file": { type: "string", path: true },
} as const satisfies FlagTable;

/** Their help lines. */
export const PROGRESS_HELP = `
  --quiet             print nothing but errors
  --progress-interval S  seconds between progress lines when stderr is not a
                      terminal (default 10)
  --log-file FILE     also append timestamped progress and messages to FILE`;

/** Parsed output flags. */
export type ProgressFlags = Parsed<typeof PROGRESS_FLAGS>;

/** Where output goes; injected by tests. */
export interface ProgressSinks {
  stderr: { writeSync(bytes: Uint8Array): number; isTerminal(): boolean };
  now: () => number;
}

const encoder = new TextEncoder();
const REDRAW_MS = 200;

/** Reports one command's progress, messages and summary. */
export class Progress {
  readonly #view: ProgressView;
  readonly #what: string;
  readonly #quiet: boolean;
  readonly #intervalMs: number;
  readonly #log: Deno.FsFile | null;
  readonly #sinks: ProgressSinks;
  readonly #interactive: boolean;
  readonly startedAt: number;
  #drawn = 0;
  #lastDraw = 0;
  #lastLog: number;

  private constructor(
    what: string,
    flags: ProgressFlags,
    log: Deno.FsFile | null,
    sinks: ProgressSinks,
  ) {
    this.#what = what;
    this.#quiet = flags.quiet ?? false;
    this.#intervalMs = 1000 *
      (integer(what, "progress-interval", flags["progress-interval"], 1, 86_400) ?? 10);
    this.#log = log;
    this.#sinks = sinks;
    this.#interactive = sinks.stderr.isTerminal();
    this.startedAt = sinks.now();
    this.#lastLog = this.startedAt;
    this.#view = new ProgressView(what, this.startedAt);
  }

  /** Starts reporting for `what` (the command) under its flags; opens the log file. */
  static async start(
    what: string,
    flags: ProgressFlags,
    sinks: ProgressSinks = { stderr: Deno.stderr, now: Date.now },
  ): Promise<Progress> {
    const path = flags["log-file"];
    const log = path
      ? await openForWriting(path, { write: true, create: true, append: true })
      : null;
    const p = new Progress(what, flags, log, sinks);
    p.#logWrite(`${what} started`);
    return p;
  }

  /** The engine's progress callback: `name` has `done` of `total` bytes. */
  readonly update = (name: string, done: number, total: number): void => {
    const now = this.#sinks.now();
    this.#view.update(name, done, total, now);
    if (now - this.#lastLog >= this.#intervalMs) {
      this.#lastLog = now;
      const line = this.#view.logLine(now);
      this.#logWrite(line, false);
      if (!this.#interactive && !this.#quiet) this.#err(`${line}\n`);
    }
    if (this.#interactive && !this.#quiet && (now - this.#lastDraw >= REDRAW_MS || done >= total)) {
      this.#lastDraw = now;
      this.#draw(this.#view.lines(now));
    }
  };

  /** Bytes done and total so far over every item. */
  totals(): { done: number; total: number } {
    return this.#view.totals();
  }

  /** A status message: on a terminal above the live lines, and in the log. */
  info(text: string): void {
    this.#logWrite(text);
    if (this.#interactive && !this.#quiet) this.#above(text);
  }

  /**
   * A message that stderr shows whether it is a terminal or not (unless
   * quiet), as `printed`; the log gets `text`.
   */
  say(text: string, printed = text): void {
    this.#logWrite(text);
    if (!this.#quiet) this.#above(printed);
  }

  /** A warning: always on stderr (scripts and bpipe logs must see it), and in the log. */
  warn(text: string): void {
    this.#logWrite(`warning: ${text}`);
    this.#above(`dirtybit: warning: ${text}`);
  }

  /** Ends with the summary line (on stderr unless quiet, and in the log). */
  finish(summary: Summary): void {
    const line = summaryLine(summary);
    this.#clear();
    if (!this.#quiet) this.#err(`${line}\n`);
    this.#logWrite(line);
    this.close();
  }

  /** Ends after a failure: the error goes to the log (main.ts prints it on stderr). */
  fail(err: unknown): void {
    this.#clear();
    this.#logWrite(`${this.#what} failed: ${describeError(err, flagOf)}`);
    this.close();
  }

  /** Closes the log file. Safe to call twice. */
  close(): void {
    try {
      this.#log?.close();
    } catch { /* closed already */ }
  }

  #err(text: string): void {
    this.#sinks.stderr.writeSync(encoder.encode(text));
  }

  #logWrite(text: string, stamp = true): void {
    if (!this.#log) return;
    const line = stamp ? `${new Date(this.#sinks.now()).toISOString()} ${text}` : text;
    try {
      this.#log.writeSync(encoder.encode(`${line}\n`));
    } catch { /* a full log disk must not fail the backup */ }
  }

  /** Prints `text` as a line, keeping the live lines below it. */
  #above(text: string): void {
    const redraw = this.#drawn > 0;
    const lines = redraw ? this.#view.lines(this.#sinks.now()) : [];
    this.#clear();
    this.#err(`${text}\n`);
    if (redraw) this.#draw(lines);
  }

  #draw(lines: string[]): void {
    const up = this.#drawn > 1 ? `\x1b[${this.#drawn - 1}A` : "";
    this.#err(`${up}\r\x1b[J${lines.join("\n")}`);
    this.#drawn = lines.length;
  }

  #clear(): void {
    if (this.#drawn === 0) return;
    const up = this.#drawn > 1 ? `\x1b[${this.#drawn - 1}A` : "";
    this.#err(`${up}\r\x1b[J`);
    this.#drawn = 0;
  }
}
