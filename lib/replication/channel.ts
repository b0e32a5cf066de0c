/**
 * The replication channel over TCP: the handshake of handshake.ts, then one
 * sealed frame (frames.ts) per message (messages.ts). The sender connects,
 * the receiver accepts. A frame that fails to open, or a connection that
 * ends inside a frame, ends the channel with an InputError. A peer that
 * refuses sends an `error` message and hangs up, often before it read what
 * was already on its way: a write that fails then reports the refusal, not
 * the broken pipe.
 *
 * @module
 */
import {
  describeError,
  DirtybitError,
  InputError,
  TargetError,
  wrapError,
} from "../core/errors.ts";
import {
  checkFrameLength,
  type DirectionKeys,
  FRAME_HEADER_BYTES,
  MAX_PLAINTEXT_BYTES,
  openFrame,
  sealFrame,
} from "./frames.ts";
import {
  decodeHello,
  deriveSessionKeys,
  HELLO_BYTES,
  newHello,
  proofMatches,
  type Role,
} from "./handshake.ts";
import { decodeMessage, encodeMessage, type Message } from "./messages.ts";
import { TokenBucket } from "./bandwidth.ts";
import { writeAll } from "../core/bytes.ts";
import { delay, withTimeout } from "../core/async.ts";

/** The transport failed (refused, reset, closed, timed out): worth retrying later. */
export class TransportError extends TargetError {}

/** Options common to both ends. */
export interface ChannelOptions {
  /** Pre-shared key, already validated (see validatePsk). */
  psk: string;
  /** Limit on the whole handshake, in ms (default 10000). */
  handshakeTimeoutMs?: number;
  /** A receive waiting longer than this fails, in ms (default 300000). */
  idleTimeoutMs?: number;
  /** Cap on what this end sends, in bytes per second. */
  bandwidthBytesPerSecond?: number;
}

/** Records sealed or being written at once: encryption overlaps the socket writes. */
const PIPELINE_FRAMES = 4;

/** Frames at least this large are written as header, then body: no concatenation copy. */
const SPLIT_WRITE_BYTES = 64 << 10;

/** How long a failed write waits for the refusal a peer sent before it hung up. */
const REFUSAL_WAIT_MS = 2000;

const AUTH_FAILED =
  "replication handshake failed: the peers' pre-shared keys differ (or the peer is not dirtybit)";

/** An authenticated, encrypted message channel. */
export class SecureChannel {
  readonly #conn: Deno.Conn;
  readonly #reader: ConnReader;
  readonly #out: DirectionKeys;
  readonly #in: DirectionKeys;
  readonly #idleTimeoutMs: number;
  readonly #bucket: TokenBucket | undefined;
  #sendSeq = 0n;
  #recvSeq = 0n;
  #sendQueue: Promise<void> = Promise.resolve();
  /** Frames handed to send() and not yet written. */
  #unwritten = 0;
  #windowWaiters: (() => void)[] = [];
  /** The first failed write; every later send fails with it. */
  #failure: unknown;
  /** Data records are encoded here, then copied once by the cipher. */
  readonly #plain = new Uint8Array(MAX_PLAINTEXT_BYTES);
  #closed = false;
  /** A receive is under way: nothing else may read the connection. */
  #receiving = false;
  /** Bytes written to the socket, frame headers and tags included. */
  bytesSent = 0;
  /** Bytes read from the socket. */
  get bytesReceived(): number {
    return this.#reader.bytesRead;
  }

  private constructor(
    conn: Deno.Conn,
    reader: ConnReader,
    out: DirectionKeys,
    inbound: DirectionKeys,
    options: ChannelOptions,
  ) {
    this.#conn = conn;
    this.#reader = reader;
    this.#out = out;
    this.#in = inbound;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? 300_000;
    const rate = options.bandwidthBytesPerSecond;
    // A small burst (50 ms of traffic, at least one 64 KiB write) keeps the
    // measured rate close to the limit even over short transfers.
    if (rate) this.#bucket = new TokenBucket(rate, Math.max(65536, rate / 20), performance.now());
  }

  /** Connects to a receiver and runs the sender's side of the handshake. */
  static async connect(
    host: string,
    port: number,
    options: ChannelOptions,
  ): Promise<SecureChannel> {
    let conn: Deno.Conn;
    try {
      conn = await peerTimeout(
        Deno.connect({ hostname: host, port, transport: "tcp" }),
        options.handshakeTimeoutMs ?? 10_000,
        () => {},
      );
    } catch (err) {
      throw wrapError(
        err,
        TransportError,
        `cannot reach the replication receiver at ${host}:${port}: ${describeError(err)}`,
      );
    }
    try {
      return await peerTimeout(
        SecureChannel.#handshake(conn, "sender", options),
        options.handshakeTimeoutMs ?? 10_000,
        () => conn.close(),
      );
    } catch (err) {
      tryClose(conn);
      throw err;
    }
  }

  /** Runs the receiver's side of the handshake on an accepted connection. */
  static async accept(conn: Deno.Conn, options: ChannelOptions): Promise<SecureChannel> {
    try {
      return await peerTimeout(
        SecureChannel.#handshake(conn, "receiver", options),
        options.handshakeTimeoutMs ?? 10_000,
        () => tryClose(conn),
      );
    } catch (err) {
      tryClose(conn);
      throw err;
    }
  }

  static async #handshake(conn: Deno.Conn, role: Role, options: ChannelOptions) {
    const reader = new ConnReader(conn);
    const mine = newHello(role);
    const peerRole: Role = role === "sender" ? "receiver" : "sender";
    await writeAll(conn, mine);
    const theirs = await reader.readExact(HELLO_BYTES, "the handshake");
    decodeHello(theirs, peerRole);
    const keys = role === "sender"
      ? await deriveSessionKeys(options.psk, mine, theirs)
      : await deriveSessionKeys(options.psk, theirs, mine);
    const out = role === "sender" ? keys.senderToReceiver : keys.receiverToSender;
    const inbound = role === "sender" ? keys.receiverToSender : keys.senderToReceiver;
    const channel = new SecureChannel(conn, reader, out, inbound, options);
    const proveMine = () =>
      channel.send({
        type: "auth",
        proof: role === "sender" ? keys.senderProof : keys.receiverProof,
      });
    const checkTheirs = async () => {
      let msg: Message;
      try {
        msg = await channel.receive();
      } catch (err) {
        // A wrong key shows as a frame that does not open, or as the peer
        // hanging up after ours did not: both mean the same to the operator.
        if (err instanceof InputError || err instanceof TransportError) {
          throw new InputError(AUTH_FAILED);
        }
        throw err;
      }
      const expected = role === "sender" ? keys.receiverProof : keys.senderProof;
      if (msg.type !== "auth" || !proofMatches(msg.proof, expected)) {
        throw new InputError(AUTH_FAILED);
      }
    };
    if (role === "sender") {
      await proveMine();
      await checkTheirs();
    } else {
      await checkTheirs();
      await proveMine();
    }
    return channel;
  }

  /**
   * Sends one message; frames go out in call order. Data and zero records are
   * pipelined: the promise resolves once the record is being sealed and fewer
   * than {@link PIPELINE_FRAMES} frames are unwritten, so encryption overlaps
   * the socket; a failed write then surfaces at the next send. Every other
   * message resolves only once it and everything before it is written.
   */
  async send(msg: Message): Promise<void> {
    if (this.#failure) throw this.#failure;
    if (this.#closed) throw new TransportError("the replication channel is closed");
    const seq = this.#sendSeq++;
    // The cipher copies the plaintext before sealFrame returns: the scratch
    // buffer is free again for the next record.
    const sealing = sealFrame(this.#out, seq, encodeMessage(msg, this.#plain));
    sealing.catch(() => {}); // awaited (and reported) in the write queue
    this.#unwritten++;
    const written = this.#sendQueue.then(async () => {
      const { header, body } = await sealing;
      if (this.#failure) throw this.#failure;
      if (this.#closed) throw new TransportError("the replication channel is closed");
      const length = header.length + body.length;
      if (this.#bucket) {
        const wait = this.#bucket.take(length, performance.now());
        if (wait > 0) await delay(wait);
      }
      try {
        if (body.length >= SPLIT_WRITE_BYTES) {
          await writeAll(this.#conn, header);
          await writeAll(this.#conn, body);
        } else {
          // Small frames go out in one write (one segment, one syscall).
          const frame = new Uint8Array(length);
          frame.set(header);
          frame.set(body, header.length);
          await writeAll(this.#conn, frame);
        }
      } catch (err) {
        throw await this.#refusalOr(
          wrapError(err, TransportError, `replication channel write failed: ${describeError(err)}`),
        );
      }
      this.bytesSent += length;
    }).finally(() => {
      this.#unwritten--;
      for (const wake of this.#windowWaiters.splice(0)) wake();
    });
    this.#sendQueue = written.catch((err) => {
      this.#failure ??= err;
    });
    if (msg.type !== "data" && msg.type !== "zero") return await written;
    while (this.#unwritten >= PIPELINE_FRAMES && !this.#failure) {
      await new Promise<void>((wake) => this.#windowWaiters.push(wake));
    }
    if (this.#failure) throw this.#failure;
  }

  /**
   * Receives the next message. A clean end of the connection between frames
   * is a TransportError; one inside a frame, or a frame that does not open,
   * is an InputError and closes the channel.
   */
  async receive(): Promise<Message> {
    this.#receiving = true;
    try {
      return await peerTimeout(this.#receiveFrame(), this.#idleTimeoutMs, () => this.close());
    } catch (err) {
      if (err instanceof InputError) this.close();
      throw err;
    } finally {
      this.#receiving = false;
    }
  }

  /**
   * After a failed write: the peer's refusal if it sent one before it hung
   * up (it waits unread in our receive buffer), else `failure`. The channel
   * is dead either way; a peer that sent nothing is not waited for long.
   */
  async #refusalOr(failure: DirtybitError): Promise<DirtybitError> {
    if (this.#receiving || this.#closed) return failure;
    try {
      const msg = await withTimeout(this.#receiveFrame(), REFUSAL_WAIT_MS, () => {
        this.close();
        return failure;
      });
      if (msg.type === "error") return refusal(msg.message);
    } catch {
      // Nothing readable: the write's own failure is the reason.
    }
    return failure;
  }

  async #receiveFrame(): Promise<Message> {
    const header = await this.#reader.readExact(FRAME_HEADER_BYTES, null);
    const length = checkFrameLength(new DataView(header.buffer, header.byteOffset).getUint32(0));
    const body = await this.#reader.readExact(length, "a frame");
    const seq = this.#recvSeq++;
    return decodeMessage(await openFrame(this.#in, seq, body));
  }

  /** Waits for the next message and checks its type; an `error` message becomes a TargetError. */
  async expect<T extends Message["type"]>(type: T): Promise<Extract<Message, { type: T }>> {
    const msg = await this.receive();
    if (msg.type === type) return msg as Extract<Message, { type: T }>;
    if (msg.type === "error") throw refusal(msg.message);
    this.close();
    throw new InputError(`replication protocol error: expected ${type}, got ${msg.type}`);
  }

  /** Closes the connection. Safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    tryClose(this.#conn);
  }
}

/** Exact reads from a connection, with one read-ahead buffer. */
class ConnReader {
  #buf = new Uint8Array(256 << 10);
  #start = 0;
  #end = 0;
  bytesRead = 0;

  constructor(readonly conn: Deno.Conn) {}

  /**
   * Reads exactly `n` bytes. `inside` names what is being read: EOF inside
   * it is an InputError (truncation); null means EOF before it is a clean end.
   */
  async readExact(n: number, inside: string | null): Promise<Uint8Array> {
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      if (this.#start === this.#end && n - filled >= this.#buf.length) {
        // Large remainder: read straight into the result, no staging copy.
        const got = await this.#read(out.subarray(filled));
        if (got === null) this.#ended(filled, inside);
        filled += got!;
        inside ??= "a frame";
        continue;
      }
      if (this.#start === this.#end) {
        const got = await this.#read(this.#buf);
        if (got === null) this.#ended(filled, inside);
        this.#start = 0;
        this.#end = got!;
      }
      const take = Math.min(n - filled, this.#end - this.#start);
      out.set(this.#buf.subarray(this.#start, this.#start + take), filled);
      this.#start += take;
      filled += take;
      if (filled > 0) inside ??= "a frame";
    }
    return out;
  }

  async #read(into: Uint8Array): Promise<number | null> {
    let got: number | null;
    try {
      got = await this.conn.read(into);
    } catch (err) {
      if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) {
        throw new TransportError("the replication channel was closed");
      }
      throw wrapError(
        err,
        TransportError,
        `replication channel read failed: ${describeError(err)}`,
      );
    }
    if (got !== null) this.bytesRead += got;
    return got;
  }

  /** End of stream: clean between frames, truncation inside one. */
  #ended(filled: number, inside: string | null): never {
    if (filled === 0 && inside === null) {
      throw new TransportError("the peer closed the replication channel");
    }
    throw new InputError(
      `the replication channel ended inside ${inside ?? "a frame"}: the frame was truncated`,
    );
  }
}

function refusal(message: string): TargetError {
  return new TargetError(`the peer refused: ${message}`);
}

function tryClose(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

/** Races `p` against the peer timeout; on timeout runs `cleanup` and fails as a transport error. */
function peerTimeout<T>(p: Promise<T>, ms: number, cleanup: () => void): Promise<T> {
  return withTimeout(p, ms, () => {
    cleanup();
    return new TransportError(`the replication peer did not answer within ${ms} ms`);
  });
}
