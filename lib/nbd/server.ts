/**
 * A read-only NBD server: accepts clients on a listener (Unix socket or
 * TCP), negotiates with each (lib/nbd/server_protocol.ts decides) and
 * answers reads and block status from an {@link NbdExport}; several clients
 * at once, several requests of each in flight.
 *
 * @module
 */
import { ByteReader } from "../stream/byte_reader.ts";
import type { AllocatedExtent } from "../core/extent.ts";
import type { LentBytes } from "../core/buffer_pool.ts";
import { writeAll } from "../core/bytes.ts";
import { describeError } from "../core/errors.ts";
import type { Log } from "../core/log.ts";
import {
  blockStatusChunk,
  Cmd,
  CMD_FLAG_REQ_ONE,
  decodeClientFlags,
  decodeOptionHeader,
  decodeRequest,
  Errno,
  errorChunk,
  type ExportInfo,
  greeting,
  handleOption,
  MAX_OPTION_DATA,
  MAX_PAYLOAD,
  type Negotiated,
  OPTION_HEADER_SIZE,
  readChunks,
  type Request,
  REQUEST_SIZE,
  simpleReply,
} from "./server_protocol.ts";

/** What the server exports: its size and name, how ranges are stored, and reads. */
export interface NbdExport extends ExportInfo {
  /** How `[offset, offset + length)` is stored, covering it in order. */
  allocation(offset: number, length: number): AllocatedExtent[];
  /**
   * The bytes of `[offset, offset + length)`, lent until the reply that
   * carries them is sent (the server then releases them); rejects when they
   * cannot be read correctly.
   */
  read(offset: number, length: number): Promise<LentBytes>;
}

/** Requests of one client served at once (the next waits for one to finish): each holds its reply. */
const IN_FLIGHT = 8;

/** A running server; {@link close} stops it and hangs up on every client. */
export class NbdServer {
  readonly #listener: Deno.Listener;
  readonly #export: NbdExport;
  readonly #log: Log;
  readonly #conns = new Set<Deno.Conn>();
  readonly #sessions = new Set<Promise<void>>();
  readonly #accepting: Promise<void>;
  #nextClient = 1;
  #closed = false;

  private constructor(listener: Deno.Listener, exp: NbdExport, log: Log) {
    this.#listener = listener;
    this.#export = exp;
    this.#log = log;
    this.#accepting = this.#accept();
  }

  /**
   * Serves `exp` to every client of `listener` until {@link close}; `log`
   * hears of clients coming and going and of failed requests.
   */
  static start(listener: Deno.Listener, exp: NbdExport, log: Log = () => {}): NbdServer {
    return new NbdServer(listener, exp, log);
  }

  /** Stops accepting, disconnects every client and waits for their sessions to end. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#listener.close();
    } catch { /* already closed */ }
    for (const conn of this.#conns) closeQuietly(conn);
    await this.#accepting;
    await Promise.all(this.#sessions);
  }

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch (err) {
        if (!this.#closed) this.#log("error", `cannot accept clients: ${describeError(err)}`);
        return;
      }
      if (this.#closed) {
        closeQuietly(conn);
        return;
      }
      const id = this.#nextClient++;
      this.#conns.add(conn);
      const stopping = () => this.#closed;
      const session = new Session(conn, this.#export, this.#log, id, stopping).run().finally(() => {
        this.#conns.delete(conn);
        closeQuietly(conn);
        this.#sessions.delete(session);
      });
      this.#sessions.add(session);
    }
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch { /* already closed */ }
}

/** One client's connection: negotiation, then requests until it leaves. */
class Session {
  readonly #in: ByteReader;
  readonly #state: Negotiated = { structured: false, allocation: false, noZeroes: false };
  readonly #inFlight = new Set<Promise<void>>();
  #writing: Promise<void> = Promise.resolve();
  #broken = false;

  constructor(
    readonly conn: Deno.Conn,
    readonly exp: NbdExport,
    readonly log: Log,
    readonly id: number,
    readonly stopping: () => boolean,
  ) {
    this.#in = new ByteReader(conn.readable);
  }

  async run(): Promise<void> {
    try {
      if (await this.#negotiate()) {
        this.log("info", `client ${this.id} connected`);
        await this.#transmit();
        this.log("info", `client ${this.id} disconnected`);
      }
    } catch (err) {
      if (this.stopping()) this.log("info", `client ${this.id} disconnected: the server stops`);
      else if (!this.#broken) this.log("warning", `client ${this.id}: ${describeError(err)}`);
    } finally {
      await Promise.allSettled(this.#inFlight);
      await this.#writing;
      await this.#in.cancel();
    }
  }

  /** True when the client reached transmission. */
  async #negotiate(): Promise<boolean> {
    await this.#send([greeting()]);
    const flagBytes = await this.#in.read(4);
    const flags = flagBytes && decodeClientFlags(flagBytes);
    if (!flags) return false;
    this.#state.noZeroes = flags.noZeroes;
    for (;;) {
      const head = await this.#in.read(OPTION_HEADER_SIZE);
      const option = head && decodeOptionHeader(head);
      if (!option) return false;
      if (option.length > MAX_OPTION_DATA) {
        this.log("warning", `client ${this.id} sent an option of ${option.length} bytes; hung up`);
        return false;
      }
      const data = await this.#in.read(option.length);
      if (!data) return false;
      const outcome = handleOption(option.option, data.slice(), this.exp, this.#state);
      await this.#send(outcome.replies);
      if (outcome.next === "close") return false;
      if (outcome.next === "transmit") return true;
    }
  }

  async #transmit(): Promise<void> {
    for (;;) {
      const bytes = await this.#in.read(REQUEST_SIZE);
      if (!bytes) return;
      const req = decodeRequest(bytes);
      if (!req) {
        this.log("warning", `client ${this.id} sent a request with a bad magic; hung up`);
        return;
      }
      switch (req.type) {
        case Cmd.disc:
          return;
        case Cmd.read:
        case Cmd.blockStatus: {
          if (this.#inFlight.size >= IN_FLIGHT) await Promise.race(this.#inFlight);
          const job = this.#answer(req).finally(() => this.#inFlight.delete(job));
          this.#inFlight.add(job);
          break;
        }
        case Cmd.write:
          // The payload follows the request: pass over it to stay in step.
          if (!(await this.#in.skip(req.length))) return;
          await this.#send([simpleReply(req.cookie, Errno.EPERM)]);
          break;
        case Cmd.trim:
        case Cmd.writeZeroes:
          await this.#send([simpleReply(req.cookie, Errno.EPERM)]);
          break;
        case Cmd.flush:
        case Cmd.cache:
          await this.#send([simpleReply(req.cookie, 0)]);
          break;
        default:
          await this.#send([simpleReply(req.cookie, Errno.EINVAL)]);
      }
    }
  }

  async #answer(req: Request): Promise<void> {
    const { cookie, offset, length } = req;
    const isRead = req.type === Cmd.read;
    if (!isRead && !this.#state.allocation) {
      return await this.#fail(req, Errno.EINVAL, "no meta context was negotiated");
    }
    if (
      offset + length > this.exp.size || (isRead ? length > MAX_PAYLOAD : length === 0)
    ) {
      return await this.#fail(req, Errno.EINVAL, "request out of range");
    }
    if (!isRead) {
      const extents = this.exp.allocation(offset, length);
      return await this.#send([
        blockStatusChunk(cookie, extents, (req.flags & CMD_FLAG_REQ_ONE) !== 0),
      ]);
    }
    const lent: LentBytes[] = [];
    try {
      let parts: Uint8Array[];
      try {
        if (this.#state.structured) {
          const extents = length === 0 ? [] : this.exp.allocation(offset, length);
          const data = new Map<AllocatedExtent, Uint8Array>();
          const reads = await Promise.allSettled(
            extents.filter((e) => e.kind === "data").map(async (e) => {
              const got = await this.exp.read(e.offset, e.length);
              lent.push(got);
              data.set(e, got.bytes);
            }),
          );
          const failed = reads.find((r) => r.status === "rejected");
          if (failed) throw failed.reason;
          parts = readChunks(cookie, extents, (e) => data.get(e)!);
        } else {
          const got = await this.exp.read(offset, length);
          lent.push(got);
          parts = [simpleReply(cookie, 0), got.bytes];
        }
      } catch (err) {
        this.log(
          "error",
          `client ${this.id}: read ${offset}+${length} failed (EIO sent): ${describeError(err)}`,
        );
        return await this.#fail(req, Errno.EIO, describeError(err));
      }
      await this.#send(parts);
    } finally {
      for (const l of lent) l.release();
    }
  }

  #fail(req: Request, errno: number, message: string): Promise<void> {
    return this.#send([
      this.#state.structured
        ? errorChunk(req.cookie, errno, message)
        : simpleReply(req.cookie, errno),
    ]);
  }

  /** Writes `parts` after every reply queued before (replies never interleave). */
  #send(parts: Uint8Array[]): Promise<void> {
    const next = this.#writing.then(async () => {
      if (this.#broken) return;
      try {
        for (const p of parts) await writeAll(this.conn, p);
      } catch {
        // The client is gone: its reads end the session.
        this.#broken = true;
        closeQuietly(this.conn);
      }
    });
    this.#writing = next;
    return next;
  }
}
