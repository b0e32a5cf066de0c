/**
 * PTCOMM packet framing (docs/ptcomm.md §2): a status letter, six ASCII
 * digits of payload length, `\n`, then the payload. Pure framing over a
 * minimal reader/writer abstraction (Deno.stdin/Deno.stdout fit it); no
 * protocol logic.
 *
 * @module
 */
import { InputError } from "../core/errors.ts";
import { type ByteWriter, writeAll } from "../core/bytes.ts";

/** Largest payload a packet may carry (`PTCOMM_MAX_PACKET_SIZE`). */
export const MAX_PAYLOAD = 999999;
/** Every header is exactly this many bytes. */
export const HEADER_SIZE = 8;

/** The status letters (docs/ptcomm.md §2). */
export type PacketKind =
  | "C"
  | "D"
  | "F"
  | "T"
  | "E"
  | "A"
  | "W"
  | "I"
  | "S"
  | "N"
  | "R"
  | "P"
  | "O"
  | "V"
  | "Q";

const KINDS = new Set<string>("CDFTEAWISNRPOVQ".split(""));
/** Kinds that never carry a payload. */
const BARE = new Set<string>(["F", "T"]);
/** Kinds that must never be sent empty (an empty one reads as end-of-data). */
const NON_EMPTY = new Set<string>(["C", "D"]);

/** One received packet; `payload` is owned by the caller. */
export interface Packet {
  kind: PacketKind;
  payload: Uint8Array;
}

/** Where packets come from: `read` returns the byte count or null at end of input. */
export interface ByteReader {
  read(into: Uint8Array): Promise<number | null>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function printable(bytes: Uint8Array): string {
  return JSON.stringify(String.fromCharCode(...bytes));
}

/** Parses an 8-byte header; throws InputError naming the defect. */
export function decodeHeader(header: Uint8Array): { kind: PacketKind; length: number } {
  if (header.length !== HEADER_SIZE) {
    throw new InputError(`PTCOMM header must be ${HEADER_SIZE} bytes, got ${header.length}`);
  }
  const kind = String.fromCharCode(header[0]);
  if (!KINDS.has(kind)) {
    throw new InputError(`PTCOMM header ${printable(header)}: unknown packet kind '${kind}'`);
  }
  let length = 0;
  for (let i = 1; i <= 6; i++) {
    const digit = header[i] - 0x30;
    if (digit < 0 || digit > 9) {
      throw new InputError(`PTCOMM header ${printable(header)}: length is not 6 decimal digits`);
    }
    length = length * 10 + digit;
  }
  if (header[7] !== 0x0a) {
    throw new InputError(`PTCOMM header ${printable(header)}: byte 8 is not a newline`);
  }
  if (BARE.has(kind) && length !== 0) {
    throw new InputError(`PTCOMM ${kind} packet must carry no payload, header says ${length}`);
  }
  if (NON_EMPTY.has(kind) && length === 0) {
    throw new InputError(`PTCOMM ${kind} packet with an empty payload`);
  }
  return { kind: kind as PacketKind, length };
}

/** Writes the header for `kind`/`length` into the first 8 bytes of `into`. */
export function encodeHeader(kind: PacketKind, length: number, into: Uint8Array): void {
  if (!Number.isInteger(length) || length < 0 || length > MAX_PAYLOAD) {
    throw new InputError(`PTCOMM payload of ${length} bytes: at most ${MAX_PAYLOAD} per packet`);
  }
  if (BARE.has(kind) && length !== 0) {
    throw new InputError(`PTCOMM ${kind} packet cannot carry a payload`);
  }
  if (NON_EMPTY.has(kind) && length === 0) {
    throw new InputError(`PTCOMM ${kind} packet cannot be empty`);
  }
  into[0] = kind.charCodeAt(0);
  const digits = String(length).padStart(6, "0");
  for (let i = 0; i < 6; i++) into[1 + i] = digits.charCodeAt(i);
  into[7] = 0x0a;
}

/** A whole packet (header + payload) as one buffer, ready for a single write. */
export function encodePacket(kind: PacketKind, payload: Uint8Array | string = ""): Uint8Array {
  const body = typeof payload === "string" ? encoder.encode(payload) : payload;
  const out = new Uint8Array(HEADER_SIZE + body.length);
  encodeHeader(kind, body.length, out);
  out.set(body, HEADER_SIZE);
  return out;
}

/** Payload as text without trailing whitespace, as the plugin reads commands (docs/ptcomm.md §2). */
export function packetText(packet: Packet): string {
  return decoder.decode(packet.payload).replace(/\s+$/, "");
}

/**
 * Reads packets, handling short reads. `read()` returns null on end of input
 * at a packet boundary and throws InputError on a truncated packet.
 */
export class PacketReader {
  /**
   * Fills the start of `into`; returns the bytes read (in a new buffer for a
   * byte stream), empty or null at EOF.
   */
  readonly #readInto: (into: Uint8Array) => Promise<Uint8Array | null>;
  #buf = new Uint8Array(HEADER_SIZE + MAX_PAYLOAD + 65536);
  #start = 0;
  #end = 0;

  /**
   * Reads from a file-like `source`, or from a byte stream (a child
   * process's stdout), which is read straight into the packet buffer
   * instead of copying every chunk.
   */
  constructor(source: ByteReader | ReadableStream<Uint8Array>) {
    if (source instanceof ReadableStream) {
      const byob = source.getReader({ mode: "byob" });
      // The buffer comes back (transferred) even with `done`: the empty view still carries it.
      this.#readInto = async (into) => (await byob.read(into)).value ?? null;
    } else {
      this.#readInto = async (into) => {
        const n = await source.read(into);
        return n ? into.subarray(0, n) : null;
      };
    }
  }

  /** Ensures `n` buffered bytes; false if input ended first. */
  async #fill(n: number): Promise<boolean> {
    if (this.#end - this.#start >= n) return true;
    if (this.#buf.length - this.#start < n) {
      this.#buf.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    while (this.#end - this.#start < n) {
      const got = await this.#readInto(this.#buf.subarray(this.#end));
      // A byte stream hands the (transferred) buffer back as a new ArrayBuffer.
      if (got && got.buffer !== this.#buf.buffer) {
        this.#buf = new Uint8Array(got.buffer as ArrayBuffer);
      }
      if (!got?.length) return false;
      this.#end += got.length;
    }
    return true;
  }

  /** The next packet, or null when the input ends cleanly between packets. */
  read(): Promise<Packet | null> {
    return this.#next(true);
  }

  /**
   * Like `read`, but the payload is a view into the reader's buffer, valid
   * only until the next call: for a reader that looks at data and drops it
   * (a fresh megabyte per packet costs page faults and zeroing).
   */
  readTransient(): Promise<Packet | null> {
    return this.#next(false);
  }

  async #next(copy: boolean): Promise<Packet | null> {
    if (!(await this.#fill(HEADER_SIZE))) {
      if (this.#end === this.#start) return null;
      throw new InputError(
        `PTCOMM input ended inside a packet header (${this.#end - this.#start} of 8 bytes)`,
      );
    }
    const { kind, length } = decodeHeader(
      this.#buf.subarray(this.#start, this.#start + HEADER_SIZE),
    );
    this.#start += HEADER_SIZE;
    if (!(await this.#fill(length))) {
      throw new InputError(
        `PTCOMM input ended inside a ${kind} packet (${
          this.#end - this.#start
        } of ${length} payload bytes)`,
      );
    }
    const payload = copy
      ? this.#buf.slice(this.#start, this.#start + length)
      : this.#buf.subarray(this.#start, this.#start + length);
    this.#start += length;
    return { kind, payload };
  }
}

/** Data packet size: 15 × 64 KiB, so restore records come back full-sized (docs/ptcomm.md §5). */
export const DATA_PACKET_SIZE = 15 * 65536;

/**
 * Writes packets, one write call sequence per packet, in call order. Data is
 * coalesced into packets of DATA_PACKET_SIZE (the last one shorter) by
 * `DataPacker`.
 */
export class PacketWriter {
  #sink: ByteWriter;
  #queue: Promise<void> = Promise.resolve();

  constructor(sink: ByteWriter) {
    this.#sink = sink;
  }

  /** Sends one packet; calls are serialised so packets never interleave. */
  send(kind: PacketKind, payload: Uint8Array | string = ""): Promise<void> {
    return this.sendRaw(encodePacket(kind, payload));
  }

  /** Sends bytes that already hold one or more complete packets. */
  sendRaw(bytes: Uint8Array): Promise<void> {
    const next = this.#queue.then(() => writeAll(this.#sink, bytes));
    this.#queue = next.catch(() => {});
    return next;
  }

  /** `C` packet with a text command; the newline is added as the plugin does. */
  command(text: string): Promise<void> {
    return this.send("C", text.endsWith("\n") ? text : `${text}\n`);
  }

  /** `F` (end of data / acknowledgement). */
  eod(): Promise<void> {
    return this.send("F");
  }
}

/**
 * Cuts a byte stream into full `D` packets with the header written in place
 * (no copy per packet beyond filling the buffer). Never emits an empty packet.
 * Two buffers: one packet goes down the pipe while the next one fills, so the
 * producer does not stall for every pipe round trip to the reader.
 */
export class DataPacker {
  #writer: PacketWriter;
  #size: number;
  #buf: Uint8Array;
  #spare: Uint8Array;
  #fill = 0;
  /** The packet being written (from `#spare`). */
  #inFlight: Promise<void> = Promise.resolve();

  constructor(writer: PacketWriter, packetSize = DATA_PACKET_SIZE) {
    if (packetSize < 1 || packetSize > MAX_PAYLOAD) {
      throw new InputError(`data packet size ${packetSize} is outside 1..${MAX_PAYLOAD}`);
    }
    this.#writer = writer;
    this.#size = packetSize;
    this.#buf = new Uint8Array(HEADER_SIZE + packetSize);
    this.#spare = new Uint8Array(HEADER_SIZE + packetSize);
  }

  /** Adds bytes, sending every packet that becomes full. */
  async push(bytes: Uint8Array): Promise<void> {
    let at = 0;
    while (at < bytes.length) {
      const take = Math.min(this.#size - this.#fill, bytes.length - at);
      this.#buf.set(bytes.subarray(at, at + take), HEADER_SIZE + this.#fill);
      this.#fill += take;
      at += take;
      if (this.#fill === this.#size) await this.#send();
    }
  }

  /** Sends what is buffered (nothing when empty) and waits until every packet is written. */
  async flush(): Promise<void> {
    if (this.#fill > 0) await this.#send();
    await this.#inFlight;
  }

  /** Starts writing the current buffer once the previous packet is out, and swaps buffers. */
  async #send(): Promise<void> {
    const packet = this.#buf;
    encodeHeader("D", this.#fill, packet);
    await this.#inFlight;
    this.#inFlight = this.#writer.sendRaw(packet.subarray(0, HEADER_SIZE + this.#fill));
    // Its failure surfaces at the next send or flush; one that nobody awaits is not unhandled.
    this.#inFlight.catch(() => {});
    this.#buf = this.#spare;
    this.#spare = packet;
    this.#fill = 0;
  }
}
