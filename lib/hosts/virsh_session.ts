/**
 * One long-lived interactive `virsh -q -c URI` for a whole job: each command
 * then costs a line on its stdin instead of a process, libvirt's start-up and
 * a connection to libvirtd (40-200 ms each, more over SSH).
 *
 * Each batch is one input line: every command between a start and an end
 * marker on stdout (`echo`), the end marker also on stderr (`echo --err`), so
 * each command's output and error are told apart although virsh goes on after
 * a command fails. In interactive mode virsh echoes the input line after its
 * prompt and `echo` prints no newline: the markers are written as two quoted
 * halves (`'mark-S''3'`) so that only virsh's own output of them matches.
 *
 * @module
 */
import type { ShellProcess } from "./ssh.ts";

/** What one virsh command printed, and its error text if it failed. */
export interface BatchResult {
  stdout: string;
  error?: string;
}

/** An argument for virsh's own command parser (single quotes, as in sh). */
export function virshQuote(arg: string): string {
  return `'${arg.replaceAll("'", "'\\''")}'`;
}

/** Errors of virsh as one short line. */
export function oneLine(s: string): string {
  return s.trim().split("\n").map((l) => l.trim().replace(/^error:\s*/, "")).filter(Boolean)
    .join("; ").slice(0, 300);
}

/** The text read so far from one of the process's streams. */
class Pending {
  #text = "";
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #decoder = new TextDecoder();
  #ended = false;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }

  /**
   * Reads until `mark` appears, and takes the text up to it (the mark
   * itself is dropped); undefined at end of stream. A read
   * is pending only while a batch waits, so an idle session keeps nothing
   * of the event loop busy.
   */
  async take(mark: string): Promise<string | undefined> {
    for (;;) {
      const at = this.#text.indexOf(mark);
      if (at >= 0) {
        const part = this.#text.slice(0, at);
        this.#text = this.#text.slice(at + mark.length);
        return part;
      }
      if (this.#ended) return undefined;
      const { value, done } = await this.#reader.read().catch(() => ({
        value: undefined,
        done: true,
      }));
      if (done || !value) {
        this.#ended = true;
        this.#text += this.#decoder.decode();
      } else {
        this.#text += this.#decoder.decode(value, { stream: true });
      }
    }
  }

  cancel(): void {
    this.#reader.cancel().catch(() => {});
  }
}

/**
 * A virsh process that runs batches of commands, one batch at a time. After
 * it fails once (no markers: a virsh without `echo --err`, one that died or
 * ran out of time) it is {@link broken} and runs nothing more.
 */
export class VirshSession {
  readonly #process: ShellProcess;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #stdout: Pending;
  readonly #stderr: Pending;
  readonly #mark = `dirtybit-virsh-${crypto.randomUUID().slice(0, 8)}`;
  #count = 0;
  #queue: Promise<unknown> = Promise.resolve();
  #broken = false;
  #closed = false;

  constructor(process: ShellProcess) {
    this.#process = process;
    this.#stdin = process.stdin.getWriter();
    this.#stdout = new Pending(process.stdout);
    this.#stderr = new Pending(process.stderr);
  }

  /** The argv of the session's process. */
  static argv(uri: string): string[] {
    return ["virsh", "-q", "-c", uri];
  }

  /** True after a batch failed: the caller runs its commands another way. */
  get broken(): boolean {
    return this.#broken;
  }

  /**
   * Runs the commands in order in this virsh; undefined when the session is
   * (or becomes) broken, then nothing of the batch may be assumed to have
   * run or not. An argument with a line break cannot be sent on one line:
   * undefined too, and the session stays usable.
   */
  run(commands: string[][], timeoutMs: number): Promise<BatchResult[] | undefined> {
    if (commands.some((args) => args.some((a) => /[\r\n]/.test(a)))) {
      return Promise.resolve(undefined);
    }
    const next = this.#queue.then(() => this.#run(commands, timeoutMs));
    this.#queue = next.catch(() => {});
    return next;
  }

  async #run(commands: string[][], timeoutMs: number): Promise<BatchResult[] | undefined> {
    if (this.#broken || this.#closed) return undefined;
    const id = this.#count++;
    // The input holds `'M-3-S''0.'`, virsh's output `M-3-S0.`.
    const half = (kind: string, i: number) => `'${this.#mark}-${id}-${kind}''${i}.'`;
    const mark = (kind: string, i: number) => `${this.#mark}-${id}-${kind}${i}.`;
    const done = commands.length;
    const lines = [
      ...commands.map((args, i) =>
        [
          `echo ${half("S", i)}`,
          args.map(virshQuote).join(" "),
          `echo ${half("E", i)}`,
          `echo --err ${half("E", i)}`,
        ].join(" ; ")
      ),
      `echo ${half("E", done)} ; echo --err ${half("E", done)}`,
    ];
    const timer = setTimeout(() => this.#fail(), timeoutMs);
    try {
      await this.#stdin.write(new TextEncoder().encode(lines.map((l) => `${l}\n`).join("")));
      const [stdout, stderr] = await Promise.all([
        this.#stdout.take(mark("E", done)),
        this.#stderr.take(`error: ${mark("E", done)}\n`),
      ]);
      if (stdout === undefined || stderr === undefined) {
        this.#fail();
        return undefined;
      }
      let from = 0;
      return commands.map((_, i) => {
        const begin = stdout.indexOf(mark("S", i));
        const end = stdout.indexOf(mark("E", i));
        const parsed = begin >= 0 && end > begin;
        const out = parsed ? stdout.slice(begin + mark("S", i).length, end) : "";
        // A line virsh cannot parse runs nothing, no marker either: its one error line.
        const errMark = `error: ${mark("E", i)}\n`;
        const at = parsed ? stderr.indexOf(errMark, from) : stderr.indexOf("\n", from);
        const to = at >= 0 ? at : stderr.length;
        const error = oneLine(stderr.slice(from, to)) ||
          (parsed ? "" : "virsh could not parse the command");
        from = parsed && at >= 0 ? at + errMark.length : to + 1;
        return error ? { stdout: out, error } : { stdout: out };
      });
    } catch {
      this.#fail();
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }

  #fail(): void {
    this.#broken = true;
    this.#process.kill();
  }

  /** Ends virsh (end of its input); idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#queue;
    await this.#stdin.close().catch(() => {});
    this.#stdout.cancel();
    this.#stderr.cancel();
    this.#process.kill();
    await this.#process.status.catch(() => {});
  }
}
