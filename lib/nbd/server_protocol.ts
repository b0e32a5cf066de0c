/**
 * The server side of the NBD protocol (fixed newstyle handshake, simple and
 * structured replies, `base:allocation`), as pure encoders, decoders and the
 * option negotiation's decisions. No I/O: lib/nbd/server.ts moves the bytes.
 * The subset served is listed in docs/serve.md.
 *
 * @module
 */
import type { AllocatedExtent } from "../core/extent.ts";
import { BASE_ALLOCATION, STATE_HOLE, STATE_ZERO } from "./maps.ts";

const NBDMAGIC = 0x4e42444d41474943n;
const IHAVEOPT = 0x49484156454f5054n;
const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

const FLAG_FIXED_NEWSTYLE = 1;
const FLAG_NO_ZEROES = 2;

export const Opt = {
  exportName: 1,
  abort: 2,
  list: 3,
  startTls: 5,
  info: 6,
  go: 7,
  structuredReply: 8,
  listMetaContext: 9,
  setMetaContext: 10,
} as const;

const Rep = { ack: 1, server: 2, info: 3, metaContext: 4 } as const;
const REP_ERR = 2 ** 31;
const RepErr = { unsup: REP_ERR + 1, invalid: REP_ERR + 3, unknown: REP_ERR + 6 } as const;
const Info = { export: 0, name: 1, description: 2, blockSize: 3 } as const;

/** Transmission flags: read-only, and several connections see the same (unchanging) data. */
const TRANSMISSION_FLAGS = 1 /* HAS_FLAGS */ | 2 /* READ_ONLY */ | 256 /* CAN_MULTI_CONN */;

export const Cmd = {
  read: 0,
  write: 1,
  disc: 2,
  flush: 3,
  trim: 4,
  cache: 5,
  writeZeroes: 6,
  blockStatus: 7,
} as const;
/** Command flag: block status may describe only one extent. */
export const CMD_FLAG_REQ_ONE = 8;

/** NBD error numbers (Linux values, as the protocol fixes them). */
export const Errno = { EPERM: 1, EIO: 5, EINVAL: 22, ENOTSUP: 95 } as const;

const ReplyType = { none: 0, offsetData: 1, offsetHole: 2, blockStatus: 5, error: 2 ** 15 + 1 };
const REPLY_FLAG_DONE = 1;

/** The one meta context id this server hands out: `base:allocation`. */
const BASE_ALLOCATION_ID = 1;

/** Largest request payload (read or write length) the server accepts. */
export const MAX_PAYLOAD = 32 << 20;
/** Block sizes advertised: any alignment works, 4 KiB is efficient. */
const MIN_BLOCK = 1;
const PREFERRED_BLOCK = 4096;
/** Largest option a client may send (names and meta context queries are short). */
export const MAX_OPTION_DATA = 64 * 1024;
/** Most extents in one block status reply: a client asks again for the rest. */
const MAX_STATUS_EXTENTS = 4096;

/** The export as negotiation sees it. */
export interface ExportInfo {
  readonly name: string;
  readonly size: number;
  readonly description?: string;
}

/** What the client negotiated so far. */
export interface Negotiated {
  /** Structured replies. */
  structured: boolean;
  /** `base:allocation` selected for block status. */
  allocation: boolean;
  /** The client set NBD_FLAG_C_NO_ZEROES. */
  noZeroes: boolean;
}

/** What to do after an option: go on negotiating, start transmission, or hang up. */
export interface OptionOutcome {
  readonly replies: Uint8Array[];
  readonly next: "continue" | "transmit" | "close";
}

/** A transmission request's fixed 28 bytes. */
export interface Request {
  readonly flags: number;
  readonly type: number;
  readonly cookie: bigint;
  readonly offset: number;
  readonly length: number;
}

/** Bytes of an option's header after the magic: option number and data length. */
export const OPTION_HEADER_SIZE = 16;
export const REQUEST_SIZE = 28;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The server's greeting: magic, IHAVEOPT, handshake flags. */
export function greeting(): Uint8Array {
  const out = new Uint8Array(18);
  const v = new DataView(out.buffer);
  v.setBigUint64(0, NBDMAGIC);
  v.setBigUint64(8, IHAVEOPT);
  v.setUint16(16, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
  return out;
}

/** The client's flags (4 bytes): null if it sets flags this server does not know. */
export function decodeClientFlags(bytes: Uint8Array): { noZeroes: boolean } | null {
  const flags = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0);
  if (flags & ~(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)) return null;
  return { noZeroes: (flags & FLAG_NO_ZEROES) !== 0 };
}

/** An option header (16 bytes): null when the magic is wrong. */
export function decodeOptionHeader(bytes: Uint8Array): { option: number; length: number } | null {
  const v = new DataView(bytes.buffer, bytes.byteOffset, OPTION_HEADER_SIZE);
  if (v.getBigUint64(0) !== IHAVEOPT) return null;
  return { option: v.getUint32(8), length: v.getUint32(12) };
}

function optionReply(option: number, type: number, data: Uint8Array = new Uint8Array(0)) {
  const out = new Uint8Array(20 + data.length);
  const v = new DataView(out.buffer);
  v.setBigUint64(0, OPTION_REPLY_MAGIC);
  v.setUint32(8, option);
  v.setUint32(12, type);
  v.setUint32(16, data.length);
  out.set(data, 20);
  return out;
}

function optionError(option: number, type: number, message: string): OptionOutcome {
  return { replies: [optionReply(option, type, encoder.encode(message))], next: "continue" };
}

/** Reads the u32-length-prefixed strings and u16 lists options carry. */
class OptionData {
  #at = 0;
  readonly #view: DataView;
  constructor(readonly bytes: Uint8Array) {
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  u16(): number | null {
    if (this.#at + 2 > this.bytes.length) return null;
    const v = this.#view.getUint16(this.#at);
    this.#at += 2;
    return v;
  }
  u32(): number | null {
    if (this.#at + 4 > this.bytes.length) return null;
    const v = this.#view.getUint32(this.#at);
    this.#at += 4;
    return v;
  }
  string(): string | null {
    const n = this.u32();
    if (n === null || this.#at + n > this.bytes.length) return null;
    const s = decoder.decode(this.bytes.subarray(this.#at, this.#at + n));
    this.#at += n;
    return s;
  }
  /** `count` items read by `item`; null if the count or an item is missing. */
  list<T>(count: number | null, item: () => T | null): T[] | null {
    if (count === null) return null;
    const items: T[] = [];
    for (let i = 0; i < count; i++) {
      const v = item();
      if (v === null) return null;
      items.push(v);
    }
    return items;
  }
  get done(): boolean {
    return this.#at === this.bytes.length;
  }
}

/** `s` after a u32 (its length, or `prefix` when given). */
function withU32(s: string, prefix?: number): Uint8Array {
  const text = encoder.encode(s);
  const bytes = new Uint8Array(4 + text.length);
  new DataView(bytes.buffer).setUint32(0, prefix ?? text.length);
  bytes.set(text, 4);
  return bytes;
}

function infoReplies(option: number, exp: ExportInfo, requested: number[]): Uint8Array[] {
  const exportInfo = new Uint8Array(12);
  const ev = new DataView(exportInfo.buffer);
  ev.setUint16(0, Info.export);
  ev.setBigUint64(2, BigInt(exp.size));
  ev.setUint16(10, TRANSMISSION_FLAGS);
  const block = new Uint8Array(14);
  const bv = new DataView(block.buffer);
  bv.setUint16(0, Info.blockSize);
  bv.setUint32(2, MIN_BLOCK);
  bv.setUint32(6, PREFERRED_BLOCK);
  bv.setUint32(10, MAX_PAYLOAD);
  const out = [optionReply(option, Rep.info, exportInfo), optionReply(option, Rep.info, block)];
  const text = (type: number, s: string) => {
    const t = encoder.encode(s);
    const b = new Uint8Array(2 + t.length);
    new DataView(b.buffer).setUint16(0, type);
    b.set(t, 2);
    return optionReply(option, Rep.info, b);
  };
  if (requested.includes(Info.name)) out.push(text(Info.name, exp.name));
  if (requested.includes(Info.description) && exp.description) {
    out.push(text(Info.description, exp.description));
  }
  out.push(optionReply(option, Rep.ack));
  return out;
}

/** Whether a client's export name means this export ("" is the default export). */
function isOurs(name: string, exp: ExportInfo): boolean {
  return name === "" || name === exp.name;
}

function noSuchExport(option: number, name: string, exp: ExportInfo): OptionOutcome {
  return optionError(option, RepErr.unknown, `no export '${name}' (this one is '${exp.name}')`);
}

/** Meta context queries that select `base:allocation`, for LIST (empty = all) or SET. */
function selectsAllocation(queries: string[], list: boolean): boolean {
  if (queries.length === 0) return list;
  return queries.some((q) => q === BASE_ALLOCATION || (list && q === "base:"));
}

/**
 * Decides one option: the replies to send and what follows. `state` is
 * updated for structured replies and meta contexts.
 */
export function handleOption(
  option: number,
  data: Uint8Array,
  exp: ExportInfo,
  state: Negotiated,
): OptionOutcome {
  const d = new OptionData(data);
  switch (option) {
    case Opt.exportName: {
      if (!isOurs(decoder.decode(data), exp)) return { replies: [], next: "close" };
      const out = new Uint8Array(state.noZeroes ? 10 : 134);
      const v = new DataView(out.buffer);
      v.setBigUint64(0, BigInt(exp.size));
      v.setUint16(8, TRANSMISSION_FLAGS);
      return { replies: [out], next: "transmit" };
    }
    case Opt.abort:
      return { replies: [optionReply(option, Rep.ack)], next: "close" };
    case Opt.list: {
      if (data.length !== 0) return optionError(option, RepErr.invalid, "LIST takes no data");
      return {
        replies: [
          optionReply(option, Rep.server, withU32(exp.name)),
          optionReply(option, Rep.ack),
        ],
        next: "continue",
      };
    }
    case Opt.info:
    case Opt.go: {
      const name = d.string();
      const requested = d.list(d.u16(), () => d.u16());
      if (name === null || requested === null || !d.done) {
        return optionError(option, RepErr.invalid, "malformed INFO/GO request");
      }
      if (!isOurs(name, exp)) return noSuchExport(option, name, exp);
      return {
        replies: infoReplies(option, exp, requested),
        next: option === Opt.go ? "transmit" : "continue",
      };
    }
    case Opt.structuredReply:
      if (data.length !== 0) {
        return optionError(option, RepErr.invalid, "STRUCTURED_REPLY takes no data");
      }
      state.structured = true;
      return { replies: [optionReply(option, Rep.ack)], next: "continue" };
    case Opt.listMetaContext:
    case Opt.setMetaContext: {
      if (!state.structured) {
        return optionError(option, RepErr.invalid, "meta contexts need structured replies first");
      }
      const name = d.string();
      const queries = d.list(d.u32(), () => d.string());
      if (name === null || queries === null || !d.done) {
        return optionError(option, RepErr.invalid, "malformed meta context request");
      }
      if (!isOurs(name, exp)) return noSuchExport(option, name, exp);
      const list = option === Opt.listMetaContext;
      const selected = selectsAllocation(queries, list);
      if (!list) state.allocation = selected;
      const replies: Uint8Array[] = [];
      if (selected) {
        // A context reply is its id (0 in a list), then its name.
        const body = withU32(BASE_ALLOCATION, list ? 0 : BASE_ALLOCATION_ID);
        replies.push(optionReply(option, Rep.metaContext, body));
      }
      replies.push(optionReply(option, Rep.ack));
      return { replies, next: "continue" };
    }
    default:
      return optionError(option, RepErr.unsup, `option ${option} is not supported`);
  }
}

/** Decodes a request's 28 bytes; null when the magic is wrong. */
export function decodeRequest(bytes: Uint8Array): Request | null {
  const v = new DataView(bytes.buffer, bytes.byteOffset, REQUEST_SIZE);
  if (v.getUint32(0) !== REQUEST_MAGIC) return null;
  const offset = v.getBigUint64(16);
  return {
    flags: v.getUint16(4),
    type: v.getUint16(6),
    cookie: v.getBigUint64(8),
    // Past 2^53 is past any export: the range check refuses it.
    offset: offset > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(offset),
    length: v.getUint32(24),
  };
}

/** A simple reply's 16 bytes (the data of a successful read follows). */
export function simpleReply(cookie: bigint, error: number): Uint8Array {
  const out = new Uint8Array(16);
  const v = new DataView(out.buffer);
  v.setUint32(0, SIMPLE_REPLY_MAGIC);
  v.setUint32(4, error);
  v.setBigUint64(8, cookie);
  return out;
}

/** A structured reply chunk's 20-byte header for a payload of `length` bytes. */
function chunkHeader(cookie: bigint, done: boolean, type: number, length: number): Uint8Array {
  const out = new Uint8Array(20);
  const v = new DataView(out.buffer);
  v.setUint32(0, STRUCTURED_REPLY_MAGIC);
  v.setUint16(4, done ? REPLY_FLAG_DONE : 0);
  v.setUint16(6, type);
  v.setBigUint64(8, cookie);
  v.setUint32(16, length);
  return out;
}

/** A structured error chunk, the last of its reply. */
export function errorChunk(cookie: bigint, error: number, message: string): Uint8Array {
  const text = encoder.encode(message).subarray(0, 4096);
  const out = new Uint8Array(20 + 6 + text.length);
  out.set(chunkHeader(cookie, true, ReplyType.error, 6 + text.length));
  const v = new DataView(out.buffer);
  v.setUint32(20, error);
  v.setUint16(24, text.length);
  out.set(text, 26);
  return out;
}

/** A successful structured reply with no payload. */
export function doneChunk(cookie: bigint): Uint8Array {
  return chunkHeader(cookie, true, ReplyType.none, 0);
}

/**
 * The chunks of a structured read reply: each data extent as OFFSET_DATA
 * with its bytes (from `dataOf`, given the extent), each zero or hole as
 * OFFSET_HOLE; the last one flagged done. Parts to write in order.
 */
export function readChunks(
  cookie: bigint,
  extents: readonly AllocatedExtent[],
  dataOf: (e: AllocatedExtent) => Uint8Array,
): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const [i, e] of extents.entries()) {
    const last = i === extents.length - 1;
    if (e.kind === "data") {
      const data = dataOf(e);
      const head = new Uint8Array(28);
      head.set(chunkHeader(cookie, last, ReplyType.offsetData, 8 + data.length));
      new DataView(head.buffer).setBigUint64(20, BigInt(e.offset));
      out.push(head, data);
    } else {
      const chunk = new Uint8Array(32);
      chunk.set(chunkHeader(cookie, last, ReplyType.offsetHole, 12));
      const v = new DataView(chunk.buffer);
      v.setBigUint64(20, BigInt(e.offset));
      v.setUint32(28, e.length);
      out.push(chunk);
    }
  }
  if (out.length === 0) out.push(doneChunk(cookie));
  return out;
}

/** base:allocation flags of a kind: holes read as zeros too. */
function stateFlags(kind: AllocatedExtent["kind"]): number {
  return kind === "data" ? 0 : kind === "zero" ? STATE_ZERO : STATE_HOLE | STATE_ZERO;
}

/**
 * The block status reply for `extents` (covering the request from its
 * start): one chunk for base:allocation, at most MAX_STATUS_EXTENTS entries,
 * or one with `reqOne`.
 */
export function blockStatusChunk(
  cookie: bigint,
  extents: readonly AllocatedExtent[],
  reqOne: boolean,
): Uint8Array {
  const shown = extents.slice(0, reqOne ? 1 : MAX_STATUS_EXTENTS);
  const out = new Uint8Array(20 + 4 + shown.length * 8);
  out.set(chunkHeader(cookie, true, ReplyType.blockStatus, 4 + shown.length * 8));
  const v = new DataView(out.buffer);
  v.setUint32(20, BASE_ALLOCATION_ID);
  for (const [i, e] of shown.entries()) {
    v.setUint32(24 + i * 8, e.length);
    v.setUint32(28 + i * 8, stateFlags(e.kind));
  }
  return out;
}
