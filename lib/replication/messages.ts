/**
 * The messages carried inside replication frames (one message per frame):
 * a type byte, then either a binary body (data and zero records, proofs) or
 * a UTF-8 JSON object (control messages). Decoding checks every field, so a
 * well-authenticated but malformed message is still an InputError. No I/O.
 *
 * @module
 */
import { InputError } from "../core/errors.ts";

/** Codec of a data record's payload. */
export type Codec = "raw" | "zstd";

/** The sender's proof, or the receiver's (first frame each way). */
export interface AuthMessage {
  type: "auth";
  proof: Uint8Array;
}
/** Sender: which replica the following messages are about. */
export interface OpenMessage {
  type: "open";
  name: string;
  size: number;
}
/** Receiver: what it holds for the opened replica. */
export interface StateMessage {
  type: "state";
  name: string;
  /** Absent when the receiver has no replica of that name yet. */
  seedId?: string;
  size?: number;
  /** Last cycle durably applied (0 = the seed). */
  cycle?: number;
  /** Present while a seed is incomplete: the offset up to which it is durable. */
  seedOffset?: number;
  /**
   * The replica's failover role when it is not `replica/replicating`, e.g.
   * `primary/promoted`: it takes no cycles, and a sender stops (never retries).
   */
  role?: RoleAnswer;
  /** What the receiver counted for this replica since its seed (`replicate status`). */
  stats?: ReplicaStats;
}

/** A replica's history at the receiver, since its seed (or failback resync) began. */
export interface ReplicaStats {
  /** When the last cycle (or the seed) was applied, ISO 8601. */
  appliedAt?: string;
  /** Cycles applied after the seed. */
  cycles: number;
  /** Bytes of disk the received batches covered. */
  dirtyBytes: number;
  /** Data payload bytes received (compressed). */
  payloadBytes: number;
  /** Bytes received on the wire for the batches. */
  wireBytes: number;
  /** Batches that failed here (refused, malformed or cut off). */
  errors: number;
  lastError?: string;
}

/** A replica's role as the receiver reports it (see roles.ts). */
export interface RoleAnswer {
  /** `ROLE/STATE`, e.g. `primary/promoted`. */
  role: string;
  /** The step that made it so, and when. */
  step?: string;
  since: string;
  /** The confirmed cycle it was promoted or fenced at. */
  cycle?: number;
  /** Promoted without the source fenced (unplanned failover). */
  unfenced?: boolean;
}
/** Sender: a batch of records follows (a seed range, a cycle, or a failback resync). */
export interface BeginMessage {
  type: "begin";
  /** `resync`: only the blocks that differ from the receiver's image (failback). */
  kind: "seed" | "cycle" | "resync";
  seedId: string;
  size: number;
  /** Cycle number this batch creates (seed batches: 0). */
  cycle: number;
  /** The confirmed cycle whose changes since it this batch contains (seed: 0). */
  base: number;
  /** Seed batches: the range they complete, so the receiver can record progress. */
  seedEnd?: number;
}
/** Sender: bytes at an offset. */
export interface DataMessage {
  type: "data";
  offset: number;
  /** Length once decoded. */
  length: number;
  codec: Codec;
  payload: Uint8Array;
}
/** Sender: a range that reads as zeros. */
export interface ZeroMessage {
  type: "zero";
  offset: number;
  length: number;
}
/** Sender: end of the batch; counts let the receiver detect a cut-off batch. */
export interface EndMessage {
  type: "end";
  records: number;
  bytes: number;
}
/** Receiver: the batch is durable. */
export interface ConfirmMessage {
  type: "confirm";
  seedId: string;
  cycle: number;
  seedOffset?: number;
}
/** Either side: a refusal with a one-line reason; the connection ends after it. */
export interface ErrorMessage {
  type: "error";
  message: string;
}
/** Sender: asks for the receiver's status of all replicas. */
export interface StatusRequestMessage {
  type: "status-request";
}
/** Receiver: status of all replicas. */
export interface StatusMessage {
  type: "status";
  replicas: StateMessage[];
}
/** Sender: asks for the xxHash64 of every block of the opened disk's image (failback). */
export interface HashesRequestMessage {
  type: "hashes-request";
  name: string;
  blockSize: number;
}
/** Receiver: the hashes of blocks `first ..` of its image, in order (several messages). */
export interface HashesMessage {
  type: "hashes";
  first: number;
  hashes: BigUint64Array;
}
/**
 * Sender: a role change at the receiver's side for replica `name`, which must
 * be at `seedId`/`cycle`: `promote` makes it the primary (failback exec),
 * `reprotect` makes it a replica again of this sender, `fenced` records that
 * this sender is fenced at that cycle (failover pre).
 */
export interface RoleMessage {
  type: "promote" | "reprotect" | "fenced";
  name: string;
  seedId: string;
  cycle: number;
}
/**
 * Receiver, after the hashes of a failback: where it kept the blocks of its
 * own disk that changed after the last cycle it sent (absent: none changed).
 */
export interface KeptMessage {
  type: "kept";
  name: string;
  path?: string;
  /** Bytes kept aside; every block when `whole` (no hash DB of that cycle). */
  bytes: number;
  whole: boolean;
  /** The last cycle this disk sent: the divergence is against it. */
  cycle?: number;
  /**
   * The divergent ranges `[offset, length]`, when known: with the DR disk's
   * own changes since its promotion, every block that can differ.
   */
  extents?: [number, number][];
}
/** Receiver: the role change is durable. */
export interface RoleDoneMessage {
  type: "role-done";
  name: string;
  role: string;
}
/** Either side: orderly end of the conversation. */
export interface CloseMessage {
  type: "close";
}

/** Every message of the protocol. */
export type Message =
  | AuthMessage
  | OpenMessage
  | StateMessage
  | BeginMessage
  | DataMessage
  | ZeroMessage
  | EndMessage
  | ConfirmMessage
  | ErrorMessage
  | StatusRequestMessage
  | StatusMessage
  | HashesRequestMessage
  | HashesMessage
  | RoleMessage
  | RoleDoneMessage
  | KeptMessage
  | CloseMessage;

const TYPE_CODES = {
  auth: 0x01,
  close: 0x02,
  error: 0x03,
  open: 0x10,
  state: 0x11,
  begin: 0x12,
  data: 0x13,
  zero: 0x14,
  end: 0x15,
  confirm: 0x16,
  "hashes-request": 0x17,
  hashes: 0x18,
  promote: 0x19,
  reprotect: 0x1a,
  "role-done": 0x1b,
  fenced: 0x1c,
  kept: 0x1d,
  "status-request": 0x20,
  status: 0x21,
} as const satisfies Record<Message["type"], number>;

const TYPE_NAMES = new Map<number, Message["type"]>(
  Object.entries(TYPE_CODES).map(([name, code]) => [code, name as Message["type"]]),
);

/** Bytes before a data record's payload: type, offset u64, length u32, codec u8. */
export const DATA_HEADER_BYTES = 14;

/**
 * Encodes a message as a frame plaintext. A data record is encoded into
 * `scratch` when it is large enough (the result is then a view of it, valid
 * until the next call), so the channel copies each payload only once.
 */
export function encodeMessage(msg: Message, scratch?: Uint8Array): Uint8Array {
  const code = TYPE_CODES[msg.type];
  switch (msg.type) {
    case "auth":
      return withType(code, msg.proof);
    case "data": {
      const size = DATA_HEADER_BYTES + msg.payload.length;
      const out = scratch && scratch.length >= size
        ? scratch.subarray(0, size)
        : new Uint8Array(size);
      const view = new DataView(out.buffer, out.byteOffset, DATA_HEADER_BYTES);
      out[0] = code;
      view.setBigUint64(1, BigInt(msg.offset));
      view.setUint32(9, msg.length);
      out[13] = msg.codec === "zstd" ? 1 : 0;
      out.set(msg.payload, DATA_HEADER_BYTES);
      return out;
    }
    case "hashes": {
      const out = new Uint8Array(9 + msg.hashes.length * 8);
      const view = new DataView(out.buffer);
      out[0] = code;
      view.setBigUint64(1, BigInt(msg.first));
      msg.hashes.forEach((h, i) => view.setBigUint64(9 + i * 8, h));
      return out;
    }
    case "zero": {
      const out = new Uint8Array(17);
      const view = new DataView(out.buffer);
      out[0] = code;
      view.setBigUint64(1, BigInt(msg.offset));
      view.setBigUint64(9, BigInt(msg.length));
      return out;
    }
    default: {
      const { type: _type, ...fields } = msg;
      return withType(code, new TextEncoder().encode(JSON.stringify(fields)));
    }
  }
}

/** Decodes a frame plaintext; anything malformed is an InputError naming the message. */
export function decodeMessage(bytes: Uint8Array): Message {
  const type = TYPE_NAMES.get(bytes[0]);
  if (!type) throw bad(`unknown message type 0x${(bytes[0] ?? 0).toString(16)}`);
  const body = bytes.subarray(1);
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  switch (type) {
    case "auth":
      if (body.length !== 32) throw bad("auth proof is not 32 bytes");
      return { type, proof: body.slice() };
    case "data": {
      if (body.length < DATA_HEADER_BYTES - 1) throw bad("data record is too short");
      const codecByte = body[12];
      if (codecByte > 1) throw bad(`data record has unknown codec ${codecByte}`);
      const msg: DataMessage = {
        type,
        offset: safeInt(view.getBigUint64(0), "data offset"),
        length: view.getUint32(8),
        codec: codecByte === 1 ? "zstd" : "raw",
        payload: body.subarray(DATA_HEADER_BYTES - 1),
      };
      if (msg.length === 0) throw bad("data record is empty");
      if (msg.codec === "raw" && msg.payload.length !== msg.length) {
        throw bad("raw data record length does not match its payload");
      }
      return msg;
    }
    case "hashes": {
      if (body.length < 8 || body.length % 8 !== 0) throw bad("hashes body is not u64s");
      const hashes = new BigUint64Array(body.length / 8 - 1);
      for (let i = 0; i < hashes.length; i++) hashes[i] = view.getBigUint64(8 + i * 8);
      return { type, first: safeInt(view.getBigUint64(0), "hashes first"), hashes };
    }
    case "zero":
      if (body.length !== 16) throw bad("zero record is not 16 bytes");
      return {
        type,
        offset: safeInt(view.getBigUint64(0), "zero offset"),
        length: positive(safeInt(view.getBigUint64(8), "zero length"), "zero length"),
      };
    default:
      return decodeControl(type, body);
  }
}

function decodeControl(type: Message["type"], body: Uint8Array): Message {
  let f: Record<string, unknown>;
  try {
    f = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch {
    throw bad(`${type} message is not JSON`);
  }
  if (typeof f !== "object" || f === null || Array.isArray(f)) {
    throw bad(`${type} is not an object`);
  }
  switch (type) {
    case "open":
      return { type, name: name(f.name), size: count(f.size, "size") };
    case "state":
      return stateOf(f);
    case "begin": {
      const kind = f.kind;
      if (kind !== "seed" && kind !== "cycle" && kind !== "resync") {
        throw bad("begin kind must be seed, cycle or resync");
      }
      return {
        type,
        kind,
        seedId: str(f.seedId, "seedId"),
        size: count(f.size, "size"),
        cycle: count(f.cycle, "cycle"),
        base: count(f.base, "base"),
        ...(f.seedEnd === undefined ? {} : { seedEnd: count(f.seedEnd, "seedEnd") }),
      };
    }
    case "end":
      return { type, records: count(f.records, "records"), bytes: count(f.bytes, "bytes") };
    case "confirm":
      return {
        type,
        seedId: str(f.seedId, "seedId"),
        cycle: count(f.cycle, "cycle"),
        ...(f.seedOffset === undefined ? {} : { seedOffset: count(f.seedOffset, "seedOffset") }),
      };
    case "error":
      return { type, message: str(f.message, "message").split("\n")[0].slice(0, 500) };
    case "status":
      if (!Array.isArray(f.replicas)) throw bad("status replicas is not a list");
      return { type, replicas: f.replicas.map((r) => stateOf(r as Record<string, unknown>)) };
    case "hashes-request": {
      const blockSize = count(f.blockSize, "blockSize");
      if (blockSize < 512 || blockSize > 1 << 24 || (blockSize & (blockSize - 1)) !== 0) {
        throw bad("blockSize must be a power of two from 512 to 16 MiB");
      }
      return { type, name: name(f.name), blockSize };
    }
    case "kept":
      return {
        type,
        name: name(f.name),
        ...(f.path === undefined ? {} : { path: str(f.path, "path") }),
        bytes: count(f.bytes, "bytes"),
        whole: f.whole === true,
        ...(f.cycle === undefined ? {} : { cycle: count(f.cycle, "cycle") }),
        ...(f.extents === undefined ? {} : { extents: rangesOf(f.extents) }),
      };
    case "promote":
    case "reprotect":
    case "fenced":
      return {
        type,
        name: name(f.name),
        seedId: str(f.seedId, "seedId"),
        cycle: count(f.cycle, "cycle"),
      };
    case "role-done":
      return { type, name: name(f.name), role: str(f.role, "role") };
    case "status-request":
    case "close":
      return { type };
    default:
      throw bad(`${type} cannot be a control message`);
  }
}

function stateOf(f: Record<string, unknown>): StateMessage {
  if (typeof f !== "object" || f === null) throw bad("state is not an object");
  const out: StateMessage = { type: "state", name: name(f.name) };
  if (f.seedId !== undefined) out.seedId = str(f.seedId, "seedId");
  if (f.size !== undefined) out.size = count(f.size, "size");
  if (f.cycle !== undefined) out.cycle = count(f.cycle, "cycle");
  if (f.seedOffset !== undefined) out.seedOffset = count(f.seedOffset, "seedOffset");
  if (f.role !== undefined) out.role = roleOf(f.role as Record<string, unknown>);
  if (f.stats !== undefined) out.stats = statsOf(f.stats as Record<string, unknown>);
  return out;
}

function statsOf(f: Record<string, unknown>): ReplicaStats {
  if (typeof f !== "object" || f === null) throw bad("state stats is not an object");
  return {
    ...(f.appliedAt === undefined ? {} : { appliedAt: str(f.appliedAt, "appliedAt") }),
    cycles: count(f.cycles, "cycles"),
    dirtyBytes: count(f.dirtyBytes, "dirtyBytes"),
    payloadBytes: count(f.payloadBytes, "payloadBytes"),
    wireBytes: count(f.wireBytes, "wireBytes"),
    errors: count(f.errors, "errors"),
    ...(f.lastError === undefined ? {} : { lastError: str(f.lastError, "lastError") }),
  };
}

function rangesOf(v: unknown): [number, number][] {
  if (!Array.isArray(v)) throw bad("extents is not a list");
  return v.map((e) => {
    if (!Array.isArray(e) || e.length !== 2) throw bad("an extent is not [offset, length]");
    return [count(e[0], "extent offset"), positive(count(e[1], "extent length"), "extent length")];
  });
}

function roleOf(f: Record<string, unknown>): RoleAnswer {
  if (typeof f !== "object" || f === null) throw bad("state role is not an object");
  return {
    role: str(f.role, "role"),
    since: str(f.since, "since"),
    ...(f.step === undefined ? {} : { step: str(f.step, "step") }),
    ...(f.cycle === undefined ? {} : { cycle: count(f.cycle, "cycle") }),
    ...(f.unfenced === true ? { unfenced: true } : {}),
  };
}

/** What a replica name may be: it ends up in file names (no `/`, no `..`). */
export const REPLICA_NAME_RULE = "1-128 of A-Z a-z 0-9 . _ - and not starting with a dot";

/** Replica names end up in file names: letters, digits, `._-`, not starting with a dot. */
export function isReplicaName(v: unknown): v is string {
  return typeof v === "string" && /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/.test(v);
}

/** `v` as a replica name, or an InputError (it came from the wire or a file). */
export function name(v: unknown): string {
  if (!isReplicaName(v)) throw bad(`replica name must be ${REPLICA_NAME_RULE}`);
  return v;
}

function str(v: unknown, field: string): string {
  if (typeof v !== "string" || v.length === 0 || v.length > 1000) {
    throw bad(`${field} is not a string`);
  }
  return v;
}

function count(v: unknown, field: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    throw bad(`${field} is not a non-negative integer`);
  }
  return v;
}

function safeInt(v: bigint, field: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`${field} is too large`);
  return Number(v);
}

function positive(v: number, field: string): number {
  if (v === 0) throw bad(`${field} is zero`);
  return v;
}

function withType(code: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + body.length);
  out[0] = code;
  out.set(body, 1);
  return out;
}

function bad(what: string): InputError {
  return new InputError(`malformed replication message: ${what}`);
}
