/**
 * QMP client. Callers depend on {@link QmpTransport} only, so the same bitmap
 * and point-in-time code runs over a QMP unix socket ({@link QmpSocket}) or
 * over another channel such as `virsh qemu-monitor-command` on libvirt hosts.
 *
 * @module
 */
import { resolve } from "node:path";
import { SourceError, TimeoutError, wrapError } from "../core/errors.ts";
import { writeAll } from "../core/bytes.ts";
import { withTimeout } from "../core/async.ts";

/** The one thing the QEMU layer needs from a monitor connection. */
export interface QmpTransport {
  /**
   * Names the QEMU this reaches, the same on every connection (the QMP
   * socket's absolute path; host and VM for libvirt): what a run records.
   */
  readonly name: string;
  /** Runs one QMP command and resolves with its `return` value; throws {@link QmpError}. */
  execute<T>(command: string, args?: object): Promise<T>;
  /** Closes the connection. Safe to call twice. */
  close(): Promise<void>;
}

/** An asynchronous QMP event, as QEMU sent it. */
export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

/** QEMU rejected a command: `qmpClass` and `desc` are QEMU's own error class and text. */
export class QmpError extends SourceError {
  constructor(
    readonly command: string,
    readonly qmpClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command} failed: ${oneLine(desc)} (${qmpClass})`);
  }
}

/** Options of {@link QmpSocket.connect}. */
export interface QmpSocketOptions {
  /** How long one command may wait for its reply, in ms (default 30000). */
  commandTimeoutMs?: number;
  /** How long to wait for the greeting and capabilities negotiation, in ms (default 10000). */
  connectTimeoutMs?: number;
  /** How many events to keep buffered; the oldest are dropped beyond it (default 1000). */
  maxBufferedEvents?: number;
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

interface EventWaiter {
  name: string;
  match: (e: QmpEvent) => boolean;
  resolve: (e: QmpEvent) => void;
}

/**
 * QMP over a unix socket: reads the greeting, negotiates capabilities, then
 * runs one command at a time, matching replies by `id`. Events are buffered
 * as they come, because QEMU may send an event (e.g. BLOCK_JOB_CANCELLED)
 * before the reply of the command that caused it.
 */
export class QmpSocket implements QmpTransport {
  readonly #conn: Deno.UnixConn;
  readonly #path: string;
  readonly #commandTimeoutMs: number;
  readonly #maxEvents: number;
  readonly #events: QmpEvent[] = [];
  readonly #eventWaiters = new Set<EventWaiter>();
  readonly #pending = new Map<string, Pending>();
  #greeting: Pending | undefined;
  #nextId = 1;
  #queue: Promise<unknown> = Promise.resolve();
  #closed = false;
  #closeReason: string | undefined;
  readonly #reader: Promise<void>;

  /** The QMP socket's absolute path. */
  get name(): string {
    return resolve(this.#path);
  }

  private constructor(conn: Deno.UnixConn, path: string, options: QmpSocketOptions) {
    this.#conn = conn;
    this.#path = path;
    this.#commandTimeoutMs = options.commandTimeoutMs ?? 30_000;
    this.#maxEvents = options.maxBufferedEvents ?? 1000;
    this.#reader = this.#readLoop();
  }

  /** Connects to a QMP unix socket and negotiates capabilities. */
  static async connect(path: string, options: QmpSocketOptions = {}): Promise<QmpSocket> {
    let conn: Deno.UnixConn;
    try {
      conn = await Deno.connect({ transport: "unix", path });
    } catch (err) {
      throw wrapError(
        err,
        SourceError,
        `cannot connect to QMP socket ${path}: ${oneLine(errorText(err))}; ` +
          `check that QEMU is running with -qmp/--monitor on that path and that it is not ` +
          `already in use by another client`,
      );
    }
    const qmp = new QmpSocket(conn, path, options);
    const timeoutMs = options.connectTimeoutMs ?? 10_000;
    try {
      await withTimeout(
        qmp.#waitGreeting(),
        timeoutMs,
        () =>
          new SourceError(
            `no QMP greeting on ${path} within ${timeoutMs} ms; check that it is a QMP ` +
              `monitor socket and that no other client holds it`,
          ),
      );
      await qmp.execute("qmp_capabilities");
    } catch (err) {
      await qmp.close();
      throw err;
    }
    return qmp;
  }

  /** Runs one command; commands are serialised, each with its own id and timeout. */
  execute<T>(command: string, args?: object): Promise<T> {
    const run = this.#queue.then(() => this.#send<T>(command, args));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** Buffered events with this name, oldest first (the buffer is not drained). */
  events(name: string): QmpEvent[] {
    return this.#events.filter((e) => e.event === name);
  }

  /**
   * Resolves with the first buffered or future event named `name` that
   * `match` accepts, and removes it from the buffer.
   */
  waitForEvent(
    name: string,
    match: (e: QmpEvent) => boolean = () => true,
    timeoutMs = this.#commandTimeoutMs,
  ): Promise<QmpEvent> {
    const index = this.#events.findIndex((e) => e.event === name && match(e));
    if (index >= 0) return Promise.resolve(this.#events.splice(index, 1)[0]);
    if (this.#closed) return Promise.reject(this.#closedError());
    let waiter: EventWaiter | undefined;
    const wait = new Promise<QmpEvent>((resolve) => {
      waiter = { name, match, resolve };
      this.#eventWaiters.add(waiter);
    });
    return withTimeout(
      wait,
      timeoutMs,
      () => new TimeoutError(`QMP event ${name} did not arrive within ${timeoutMs} ms`),
    ).finally(() => this.#eventWaiters.delete(waiter!));
  }

  /** Closes the socket; commands still waiting fail. Safe to call twice. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closeReason = "closed by client";
      try {
        this.#conn.close();
      } catch {
        // already closed by the peer
      }
    }
    await this.#reader;
  }

  #waitGreeting(): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.#greeting = { command: "greeting", resolve, reject };
    });
  }

  async #send<T>(command: string, args?: object): Promise<T> {
    if (this.#closed) throw this.#closedError();
    const id = `dirtybit-${this.#nextId++}`;
    const message: Record<string, unknown> = { execute: command, id };
    if (args !== undefined) message.arguments = args;
    const reply = new Promise<unknown>((resolve, reject) => {
      this.#pending.set(id, { command, resolve, reject });
    });
    try {
      await writeAll(this.#conn, new TextEncoder().encode(JSON.stringify(message) + "\n"));
    } catch (err) {
      this.#pending.delete(id);
      throw wrapError(
        err,
        SourceError,
        `cannot send QMP ${command} to ${this.#path}: ${errorText(err)}`,
      );
    }
    const timeoutMs = this.#commandTimeoutMs;
    return await withTimeout(reply, timeoutMs, () => {
      this.#pending.delete(id);
      return new SourceError(
        `QMP ${command} got no reply within ${timeoutMs} ms on ${this.#path}; QEMU may be hung`,
      );
    }) as T;
  }

  async #readLoop(): Promise<void> {
    const decoder = new TextDecoder();
    const buffer = new Uint8Array(64 * 1024);
    let text = "";
    try {
      while (true) {
        const n = await this.#conn.read(buffer);
        if (n === null) break;
        text += decoder.decode(buffer.subarray(0, n), { stream: true });
        let newline: number;
        while ((newline = text.indexOf("\n")) >= 0) {
          const line = text.slice(0, newline).trim();
          text = text.slice(newline + 1);
          if (line) this.#dispatch(line);
        }
      }
    } catch (err) {
      this.#closeReason ??= errorText(err);
    }
    this.#closed = true;
    this.#closeReason ??= "closed by QEMU";
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
    const err = this.#closedError();
    this.#greeting?.reject(err);
    for (const pending of this.#pending.values()) pending.reject(err);
    this.#pending.clear();
  }

  #dispatch(line: string): void {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(line);
    } catch {
      this.#closeReason = `malformed QMP message: ${line.slice(0, 80)}`;
      this.#conn.close();
      return;
    }
    if ("QMP" in message) {
      this.#greeting?.resolve(message.QMP);
      this.#greeting = undefined;
    } else if (typeof message.event === "string") {
      this.#onEvent(message as unknown as QmpEvent);
    } else if (typeof message.id === "string") {
      const pending = this.#pending.get(message.id);
      if (!pending) return; // the reply to a command that already timed out
      this.#pending.delete(message.id);
      if ("error" in message) {
        const error = message.error as { class?: string; desc?: string };
        pending.reject(
          new QmpError(pending.command, error.class ?? "GenericError", error.desc ?? "unknown"),
        );
      } else {
        pending.resolve(message.return);
      }
    }
  }

  #onEvent(event: QmpEvent): void {
    for (const waiter of this.#eventWaiters) {
      if (waiter.name === event.event && waiter.match(event)) {
        this.#eventWaiters.delete(waiter);
        waiter.resolve(event);
        return;
      }
    }
    this.#events.push(event);
    if (this.#events.length > this.#maxEvents) this.#events.shift();
  }

  #closedError(): SourceError {
    return new SourceError(`QMP connection ${this.#path} is closed (${this.#closeReason})`);
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, " ").trim();
}
