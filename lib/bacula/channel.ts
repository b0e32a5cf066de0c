/**
 * The backend's side of one PTCOMM connection: lockstep helpers on top of
 * the framing, cancellation (SIGUSR1 from the caller, an old plugin's
 * `E CANCEL`, or the plugin going away) and message packets that also go to
 * the log.
 *
 * @module
 */
import { CancelledError, InputError } from "../core/errors.ts";
import { type Packet, type PacketKind, PacketReader, packetText, PacketWriter } from "./ptcomm.ts";
import type { BackendLog } from "./log.ts";

/** The plugin sent `T`: it wants the backend to exit now. */
export class TerminateRequest extends Error {
  constructor() {
    super("plugin sent T");
  }
}

/** A packet that is not the one the protocol allows here. */
export function protocolError(expected: string, got: Packet | null): InputError {
  if (got === null) {
    return new InputError(`plugin closed the connection while ${expected} was expected`);
  }
  const text = got.kind === "C" || got.kind === "E" ? ` '${packetText(got).slice(0, 60)}'` : "";
  return new InputError(`protocol error: expected ${expected}, got ${got.kind} packet${text}`);
}

/** Message kinds the backend sends to the job log (`Q`: an error that does not end the step). */
export type MessageKind = "I" | "W" | "A" | "Q";

/** Lockstep reading and writing with cancellation. */
export class Channel {
  readonly #reader: PacketReader;
  readonly #writer: PacketWriter;
  readonly #log: BackendLog;
  readonly #abort = new AbortController();
  readonly #aborted: Promise<never>;
  #pending: Promise<Packet | null> | null = null;

  constructor(reader: PacketReader, writer: PacketWriter, log: BackendLog, cancel: AbortSignal) {
    this.#reader = reader;
    this.#writer = writer;
    this.#log = log;
    this.#aborted = new Promise((_, reject) => {
      const fire = () => reject(this.#abort.signal.reason);
      this.#abort.signal.addEventListener("abort", fire, { once: true });
    });
    this.#aborted.catch(() => {});
    const onCancel = () => this.cancel(new CancelledError("job cancelled (SIGUSR1 from the FD)"));
    if (cancel.aborted) onCancel();
    else cancel.addEventListener("abort", onCancel, { once: true });
  }

  /** Aborted on cancel or when the plugin goes away; hand it to the engine. */
  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  get writer(): PacketWriter {
    return this.#writer;
  }

  /** Ends all waiting with `reason`. */
  cancel(reason: Error): void {
    if (!this.#abort.signal.aborted) {
      this.#log.line(`cancel: ${reason.message}`);
      this.#abort.abort(reason);
    }
  }

  /** `p`, unless the session is cancelled first. */
  guard<T>(p: Promise<T>): Promise<T> {
    return Promise.race([p, this.#aborted]);
  }

  #read(): Promise<Packet | null> {
    return this.#reader.read().then((p) => {
      if (p?.kind === "E" && packetText(p) === "CANCEL") {
        this.cancel(new CancelledError("job cancelled (E CANCEL from the plugin)"));
      }
      return p;
    });
  }

  /**
   * Starts reading the next packet in the background, so the end of input or
   * a cancel is noticed while the backend is busy streaming (the plugin sends
   * nothing then). The packet is kept for the next `next()`.
   */
  watch(): void {
    if (this.#pending) return;
    this.#pending = this.#read();
    this.#pending.then((p) => {
      if (p === null) this.cancel(new CancelledError("plugin closed the connection"));
    }, (e) => this.cancel(e instanceof Error ? e : new InputError(String(e))));
  }

  /** The next packet, or null at end of input. `T` throws TerminateRequest. */
  async next(): Promise<Packet | null> {
    const p = this.#pending ?? this.#read();
    this.#pending = null;
    const packet = await this.guard(p);
    if (this.#abort.signal.aborted) throw this.#abort.signal.reason;
    if (packet?.kind === "T") throw new TerminateRequest();
    return packet;
  }

  /** The next packet, which must be a `C`; returns its text. */
  async command(expected: string): Promise<string> {
    const p = await this.next();
    if (p?.kind !== "C") throw protocolError(expected, p);
    return packetText(p);
  }

  /** Expects the command `word` exactly. */
  async expectWord(word: string): Promise<void> {
    const p = await this.next();
    if (p?.kind !== "C" || packetText(p) !== word) throw protocolError(`command ${word}`, p);
  }

  /** Reads `C` lines until `F` (the Job and Params blocks). */
  async block(name: string): Promise<string[]> {
    const lines: string[] = [];
    for (;;) {
      const p = await this.next();
      if (p?.kind === "F") return lines;
      if (p?.kind !== "C") throw protocolError(`a ${name} line or F`, p);
      lines.push(packetText(p));
    }
  }

  /** Expects `T` (end of session). */
  async expectTerminate(): Promise<void> {
    try {
      const p = await this.next();
      throw protocolError("T", p);
    } catch (e) {
      if (!(e instanceof TerminateRequest)) throw e;
    }
  }

  /** Sends a `C` command. */
  send(text: string): Promise<void> {
    return this.guard(this.#writer.command(text));
  }

  /** Sends `F`. */
  eod(): Promise<void> {
    return this.guard(this.#writer.eod());
  }

  /** Sends a job message and logs it. */
  say(kind: MessageKind, text: string): Promise<void> {
    this.#log.line(`${kind}: ${text}`);
    return this.guard(this.#writer.send(kind as PacketKind, text));
  }

  /** Logs a line only. */
  log(text: string): void {
    this.#log.line(text);
  }
}
