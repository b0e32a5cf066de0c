/**
 * The dirtybit backup stream format, version 3 (and versions 1 and 2, still read):
 * pure encoders and decoders of the stream header, record headers, data
 * checksums and trailer. No I/O. The byte layout is specified in
 * docs/stream-format.md; this module is its single implementation.
 *
 * @module
 */
import { xxh64 } from "@node-rs/xxhash";
import { InputError } from "../core/errors.ts";
import type { Compression } from "./compression.ts";
import { BACKUP_LEVELS, type BackupLevel } from "../core/level.ts";

/** First bytes of every stream. */
export const STREAM_MAGIC = new TextEncoder().encode("DIRTYBIT");
/** Last bytes of every stream, after the trailer checksum. */
export const END_MAGIC = new TextEncoder().encode("DBITEND\n");
/** The format version this code writes. */
export const STREAM_VERSION = 3;
/**
 * The versions this code reads: 1 and 2 have no payload checksum in their
 * (shorter) record headers, and 1 differs in what its two other checksums cover.
 */
export const READABLE_VERSIONS: readonly number[] = [1, 2, 3];
/** "1, 2 and 3", for messages. */
const READABLE_LIST = `${READABLE_VERSIONS.slice(0, -1).join(", ")} and ${
  READABLE_VERSIONS.at(-1)
}`;
/** Bytes before the header JSON: magic, version, flags, JSON length. */
export const HEADER_PREFIX_SIZE = 16;
/** Largest header JSON accepted (the VM definition in `metadata` must fit). */
export const MAX_HEADER_JSON = 1 << 20;
/** Size of a data or zero record header as this code writes it (version 3). */
export const RECORD_HEADER_SIZE = 48;
/** Size of a record header of a version 1 or 2 stream: no payload checksum. */
const V2_RECORD_HEADER_SIZE = 40;
/** Size of the trailer, end magic included. */
export const TRAILER_SIZE = 64;
/** Largest uncompressed length of one data record; bounds a reader's memory. */
export const MAX_RECORD_DATA = 4 << 20;

/** Record kinds (byte 0 of a record header or the trailer). */
export const RecordKind = { data: 1, zero: 2, trailer: 3 } as const;
/** Record flag: the payload is a zstd frame. */
export const FLAG_ZSTD = 1;

/** The self-describing header of a stream. */
export interface StreamHeader {
  /** Format version ({@link STREAM_VERSION}). */
  readonly version: number;
  /** Name of the disk (volume or node) the stream is a backup of. */
  readonly disk: string;
  /** Virtual size of the disk in bytes. */
  readonly virtualSize: number;
  /** Change-tracking granularity (bitmap and hash DB block size) in bytes. */
  readonly blockSize: number;
  readonly level: BackupLevel;
  /** Unique id of this backup. */
  readonly backupId: string;
  /** Id of the backup this one applies on top of; null exactly for a full. */
  readonly parentId: string | null;
  /** Id shared by a full and every backup based on it. */
  readonly chainId: string;
  /** Dirty bitmap / checkpoint that marks this backup's point in time ("" if none). */
  readonly checkpoint: string;
  /** Creation time, ISO 8601 UTC. */
  readonly createdAt: string;
  readonly compression: Compression;
  /** Free-form JSON, e.g. the VM definition. */
  readonly metadata?: Record<string, unknown>;
}

/** What a writer is given: the header without version; `createdAt` defaults to now. */
export type StreamHeaderInit = Omit<StreamHeader, "version" | "createdAt"> & {
  readonly createdAt?: string;
};

/** The decoded fixed part of a data or zero record. */
export interface RecordHeader {
  readonly kind: "data" | "zero";
  /** Payload is zstd-compressed (data only). */
  readonly compressed: boolean;
  /** Payload bytes that follow the header (0 for zero records). */
  readonly storedLength: number;
  readonly offset: number;
  /** Uncompressed length of the range. */
  readonly length: number;
  /** The uncompressed data's checksum, see {@link dataChecksum} (0 for zero records). */
  readonly checksum: bigint;
  /**
   * xxHash64 of a compressed record's stored payload, checked before it is
   * decompressed. 0 for uncompressed records (their stored bytes are the
   * data, which `checksum` covers), for zero records, and in versions 1 and 2.
   */
  readonly payloadChecksum: bigint;
}

/** The header of a zero record: `[offset, offset + length)` reads as zeros, no payload follows. */
export function zeroRecordHeader(offset: number, length: number): RecordHeader {
  return {
    kind: "zero",
    compressed: false,
    storedLength: 0,
    offset,
    length,
    checksum: 0n,
    payloadChecksum: 0n,
  };
}

/** Totals and stream checksum written at the end of a stream. */
export interface StreamTrailer {
  /** Data and zero records. */
  readonly records: number;
  /** Uncompressed bytes of data records. */
  readonly dataBytes: number;
  /** Bytes covered by zero records. */
  readonly zeroBytes: number;
  /** Payload bytes as stored (after compression). */
  readonly storedBytes: number;
  /** xxHash64 of the stream before it (see {@link streamHashCoversPayloads}), as 16 hex digits. */
  readonly checksum: string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * The zstd level of a header's `none` or `zstd:N`, or 0 for none. Up to zstd's
 * own 22, which older dirtybits let `backup --compress` write; what one may
 * ask for now is parsed once, in compression.ts.
 */
export function compressionLevel(c: string): number {
  if (c === "none") return 0;
  const m = /^zstd:(\d{1,2})$/.exec(c);
  const level = m ? Number(m[1]) : NaN;
  if (!(level >= 1 && level <= 22)) {
    throw new RangeError(`compression '${c}' is not 'none' or 'zstd:N' with N from 1 to 22`);
  }
  return level;
}

function fail(what: string): never {
  throw new InputError(`invalid backup stream header: ${what}`);
}

function requireString(o: Record<string, unknown>, key: string, nonEmpty: boolean): string {
  const v = o[key];
  if (typeof v !== "string" || (nonEmpty && v === "")) {
    fail(`'${key}' must be a ${nonEmpty ? "non-empty " : ""}string`);
  }
  return v;
}

function requireSize(o: Record<string, unknown>, key: string): number {
  const v = o[key];
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    fail(`'${key}' must be a non-negative integer`);
  }
  return v;
}

/** Checks a header's fields and their combination; throws InputError naming the field. */
export function validateHeader(o: Record<string, unknown>): StreamHeader {
  const version = requireSize(o, "version");
  if (!READABLE_VERSIONS.includes(version)) {
    fail(`unknown version ${version} (this dirtybit reads versions ${READABLE_LIST})`);
  }
  const disk = requireString(o, "disk", true);
  const virtualSize = requireSize(o, "virtualSize");
  const blockSize = requireSize(o, "blockSize");
  if (blockSize < 512 || (blockSize & (blockSize - 1)) !== 0 || blockSize > (1 << 30)) {
    fail(`'blockSize' ${blockSize} is not a power of two from 512 to 1 GiB`);
  }
  const level = o.level as BackupLevel;
  if (!BACKUP_LEVELS.includes(level)) fail(`'level' must be one of ${BACKUP_LEVELS.join(", ")}`);
  const backupId = requireString(o, "backupId", true);
  const parentId = o.parentId === null ? null : requireString(o, "parentId", true);
  if (level === "full" && parentId !== null) fail("a full backup has no 'parentId'");
  if (level !== "full" && parentId === null) fail(`an ${level} backup needs a 'parentId'`);
  const chainId = requireString(o, "chainId", true);
  const checkpoint = requireString(o, "checkpoint", false);
  const createdAt = requireString(o, "createdAt", true);
  if (Number.isNaN(Date.parse(createdAt))) fail(`'createdAt' '${createdAt}' is not a date`);
  const compression = requireString(o, "compression", true) as Compression;
  try {
    compressionLevel(compression);
  } catch (err) {
    fail((err as Error).message);
  }
  const metadata = o.metadata;
  if (
    metadata !== undefined &&
    (metadata === null || typeof metadata !== "object" || Array.isArray(metadata))
  ) {
    fail("'metadata' must be a JSON object");
  }
  return {
    version,
    disk,
    virtualSize,
    blockSize,
    level,
    backupId,
    parentId,
    chainId,
    checkpoint,
    createdAt,
    compression,
    ...(metadata ? { metadata: metadata as Record<string, unknown> } : {}),
  };
}

/** Completes and validates a writer's header (RangeError on a bad field: a caller bug). */
export function completeHeader(init: StreamHeaderInit): StreamHeader {
  const candidate = {
    ...init,
    version: STREAM_VERSION,
    createdAt: init.createdAt ?? new Date().toISOString(),
  };
  try {
    return validateHeader(candidate);
  } catch (err) {
    throw new RangeError((err as Error).message);
  }
}

/** Encodes the stream header: prefix, JSON, xxHash64 of both. */
export function encodeHeader(header: StreamHeader): Uint8Array {
  const json = encoder.encode(JSON.stringify(header));
  if (json.length > MAX_HEADER_JSON) {
    throw new RangeError(
      `stream header JSON is ${json.length} bytes, more than ${MAX_HEADER_JSON}`,
    );
  }
  const out = new Uint8Array(HEADER_PREFIX_SIZE + json.length + 8);
  const view = new DataView(out.buffer);
  out.set(STREAM_MAGIC, 0);
  view.setUint16(8, header.version, true);
  view.setUint16(10, 0, true);
  view.setUint32(12, json.length, true);
  out.set(json, HEADER_PREFIX_SIZE);
  view.setBigUint64(HEADER_PREFIX_SIZE + json.length, xxh64(out.subarray(0, -8)), true);
  return out;
}

/**
 * Decodes the 16-byte header prefix and returns the JSON length that follows
 * (then 8 checksum bytes).
 */
export function decodeHeaderPrefix(prefix: Uint8Array): number {
  if (prefix.length !== HEADER_PREFIX_SIZE) throw new RangeError("header prefix is 16 bytes");
  if (!STREAM_MAGIC.every((b, i) => prefix[i] === b)) {
    throw new InputError("not a dirtybit backup stream (bad magic)");
  }
  const view = new DataView(prefix.buffer, prefix.byteOffset, prefix.byteLength);
  const version = view.getUint16(8, true);
  if (!READABLE_VERSIONS.includes(version)) {
    throw new InputError(
      `backup stream version ${version} is not supported (this dirtybit reads versions ${READABLE_LIST})`,
    );
  }
  if (view.getUint16(10, true) !== 0) fail("reserved flags are set");
  const jsonLength = view.getUint32(12, true);
  if (jsonLength > MAX_HEADER_JSON) fail(`JSON length ${jsonLength} exceeds ${MAX_HEADER_JSON}`);
  return jsonLength;
}

/** Decodes a complete header (prefix + JSON + checksum) and validates it. */
export function decodeHeader(bytes: Uint8Array): StreamHeader {
  const jsonLength = decodeHeaderPrefix(bytes.subarray(0, HEADER_PREFIX_SIZE));
  if (bytes.length !== HEADER_PREFIX_SIZE + jsonLength + 8) fail("wrong length");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stored = view.getBigUint64(bytes.length - 8, true);
  if (xxh64(bytes.subarray(0, -8)) !== stored) fail("checksum mismatch (corrupt header)");
  let parsed: unknown;
  try {
    parsed = JSON.parse(decoder.decode(bytes.subarray(HEADER_PREFIX_SIZE, -8)));
  } catch {
    fail("JSON does not parse");
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    fail("JSON is not an object");
  }
  const header = validateHeader(parsed as Record<string, unknown>);
  if (header.version !== view.getUint16(8, true)) {
    fail(
      `JSON version ${header.version} differs from the binary version ${view.getUint16(8, true)}`,
    );
  }
  return header;
}

function putU64(view: DataView, at: number, value: number): void {
  view.setBigUint64(at, BigInt(value), true);
}

function getU64(view: DataView, at: number, what: string): number {
  const v = view.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new InputError(`backup stream ${what} ${v} is out of range (corrupt stream)`);
  }
  return Number(v);
}

/** Size of a record header in a stream of format `version`. */
export function recordHeaderSize(version: number): number {
  return version >= 3 ? RECORD_HEADER_SIZE : V2_RECORD_HEADER_SIZE;
}

/**
 * Encodes a data or zero record header (version 3) into the first
 * RECORD_HEADER_SIZE bytes of `into` (a new buffer by default) and returns
 * them; the payload (if any) follows it.
 */
export function encodeRecordHeader(
  rec: RecordHeader,
  into: Uint8Array = new Uint8Array(RECORD_HEADER_SIZE),
): Uint8Array {
  const out = into.subarray(0, RECORD_HEADER_SIZE);
  const view = new DataView(out.buffer, out.byteOffset, RECORD_HEADER_SIZE);
  out[0] = RecordKind[rec.kind];
  out[1] = rec.compressed ? FLAG_ZSTD : 0;
  out[2] = out[3] = 0;
  view.setUint32(4, rec.storedLength, true);
  putU64(view, 8, rec.offset);
  putU64(view, 16, rec.length);
  view.setBigUint64(24, rec.checksum, true);
  view.setBigUint64(32, rec.payloadChecksum, true);
  view.setBigUint64(40, xxh64(out.subarray(0, 40)), true);
  return out;
}

/**
 * Decodes a record header of a stream of format `version` whose kind byte
 * is data or zero, verifying its checksum and internal consistency. Range
 * checks against the disk size and record order are the reader's.
 */
export function decodeRecordHeader(bytes: Uint8Array, version: number): RecordHeader {
  const size = recordHeaderSize(version);
  if (bytes.length !== size) throw new RangeError(`record header is ${size} bytes`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (xxh64(bytes.subarray(0, size - 8)) !== view.getBigUint64(size - 8, true)) {
    throw new InputError("backup stream record header checksum mismatch (corrupt stream)");
  }
  const kindByte = bytes[0];
  const kind = kindByte === RecordKind.data ? "data" : kindByte === RecordKind.zero ? "zero" : null;
  if (!kind) throw new InputError(`backup stream record kind ${kindByte} is unknown`);
  const flags = bytes[1];
  if ((flags & ~FLAG_ZSTD) !== 0 || bytes[2] !== 0 || bytes[3] !== 0) {
    throw new InputError("backup stream record has unknown flags set");
  }
  const compressed = (flags & FLAG_ZSTD) !== 0;
  const storedLength = view.getUint32(4, true);
  const offset = getU64(view, 8, "record offset");
  const length = getU64(view, 16, "record length");
  const checksum = view.getBigUint64(24, true);
  const payloadChecksum = size === RECORD_HEADER_SIZE ? view.getBigUint64(32, true) : 0n;
  if (length === 0) throw new InputError(`backup stream record at ${offset} has length 0`);
  if (kind === "zero") {
    if (compressed || storedLength !== 0 || checksum !== 0n || payloadChecksum !== 0n) {
      throw new InputError(`backup stream zero record at ${offset} carries payload fields`);
    }
  } else {
    if (length > MAX_RECORD_DATA) {
      throw new InputError(
        `backup stream data record at ${offset} is ${length} bytes, more than ${MAX_RECORD_DATA}`,
      );
    }
    const ok = compressed
      ? storedLength > 0 && storedLength < length
      : storedLength === length && payloadChecksum === 0n;
    if (!ok) {
      throw new InputError(
        `backup stream data record at ${offset} stores ${storedLength} bytes for ${length}`,
      );
    }
  }
  return { kind, compressed, storedLength, offset, length, checksum, payloadChecksum };
}

/** The payload checksum of a compressed version 3 record: xxHash64 of the stored bytes. */
export function payloadChecksum(payload: Uint8Array): bigint {
  return xxh64(payload);
}

/**
 * Checks a compressed record's stored payload against its header before it
 * is decompressed (version 3; older records carry no payload checksum, and an
 * uncompressed one is checked by its data checksum). InputError naming
 * `where` on a mismatch.
 */
export function checkPayload(
  version: number,
  rec: RecordHeader,
  payload: Uint8Array,
  where: string,
): void {
  if (version >= 3 && rec.compressed && payloadChecksum(payload) !== rec.payloadChecksum) {
    throw new InputError(`${where}: stored payload checksum mismatch (corrupt stream)`);
  }
}

/**
 * The checksum of a data record's uncompressed `data` at disk `offset`.
 * Version 1: xxHash64 of the data. Versions 2 and 3: xxHash64 of the xxHash64s of
 * the data's pieces, cut at multiples of `blockSize` from the disk's start,
 * each digest as 8 little-endian bytes. Those piece digests are the hash DB's
 * block hashes, so a backup that has them checksums a record without hashing
 * its data again ({@link checksumOfDigests}).
 */
export function dataChecksum(
  header: Pick<StreamHeader, "version" | "blockSize">,
  offset: number,
  data: Uint8Array,
): bigint {
  if (header.version === 1) return xxh64(data);
  const { blockSize } = header;
  const first = Math.min(data.length, blockSize - (offset % blockSize));
  const count = data.length === 0 ? 0 : 1 + Math.ceil((data.length - first) / blockSize);
  const digests = new BigUint64Array(count);
  for (let i = 0, at = 0; i < count; i++) {
    const end = i === 0 ? first : Math.min(at + blockSize, data.length);
    digests[i] = xxh64(data.subarray(at, end));
    at = end;
  }
  return checksumOfDigests(digests);
}

/** Whether a record's data checksum in a stream with header `a` is valid unchanged in one with `b`. */
export function sameDataChecksum(
  a: Pick<StreamHeader, "version" | "blockSize">,
  b: Pick<StreamHeader, "version" | "blockSize">,
): boolean {
  return a.version === 1 ? b.version === 1 : b.version !== 1 && a.blockSize === b.blockSize;
}

/** The data checksum (version 2 and later) from the piece digests of {@link dataChecksum}. */
export function checksumOfDigests(digests: BigUint64Array): bigint {
  const bytes = new Uint8Array(digests.length * 8);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < digests.length; i++) view.setBigUint64(i * 8, digests[i], true);
  return xxh64(bytes);
}

/**
 * Whether the trailer's stream checksum covers data payloads: version 1
 * hashes every byte, versions 2 and 3 every byte but the payloads, which
 * their records' data checksums (and in version 3 payload checksums) cover;
 * the record headers holding those are in the stream checksum.
 */
export function streamHashCoversPayloads(version: number): boolean {
  return version === 1;
}

/** Kind of the frame a byte starts: data/zero record or trailer; InputError otherwise. */
export function frameKind(firstByte: number): "record" | "trailer" {
  if (firstByte === RecordKind.data || firstByte === RecordKind.zero) return "record";
  if (firstByte === RecordKind.trailer) return "trailer";
  throw new InputError(`backup stream frame kind ${firstByte} is unknown (corrupt stream)`);
}

/**
 * Encodes the trailer. `hashBefore` must be the running xxHash64 state over the
 * stream so far (payloads left out, {@link streamHashCoversPayloads}); it is fed
 * the trailer's first 40 bytes and digested.
 */
export function encodeTrailer(
  totals: Omit<StreamTrailer, "checksum">,
  hashBefore: { update(b: Uint8Array): unknown; digest(): bigint },
): { bytes: Uint8Array; trailer: StreamTrailer } {
  const out = new Uint8Array(TRAILER_SIZE);
  const view = new DataView(out.buffer);
  out[0] = RecordKind.trailer;
  putU64(view, 8, totals.records);
  putU64(view, 16, totals.dataBytes);
  putU64(view, 24, totals.zeroBytes);
  putU64(view, 32, totals.storedBytes);
  hashBefore.update(out.subarray(0, 40));
  const checksum = hashBefore.digest();
  view.setBigUint64(40, checksum, true);
  view.setBigUint64(48, 0n, true);
  out.set(END_MAGIC, 56);
  return { bytes: out, trailer: { ...totals, checksum: hex64(checksum) } };
}

/**
 * Decodes and verifies a trailer against what the reader counted, given the
 * running hash over the stream before the trailer (as for {@link encodeTrailer}).
 */
export function decodeTrailer(
  bytes: Uint8Array,
  counted: Omit<StreamTrailer, "checksum">,
  hashBefore: { update(b: Uint8Array): unknown; digest(): bigint },
): StreamTrailer {
  if (bytes.length !== TRAILER_SIZE) throw new RangeError("trailer is 64 bytes");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  hashBefore.update(bytes.subarray(0, 40));
  const checksum = hashBefore.digest();
  if (view.getBigUint64(40, true) !== checksum) {
    throw new InputError("backup stream checksum mismatch (corrupt stream)");
  }
  if (
    bytes[0] !== RecordKind.trailer || bytes.subarray(1, 8).some((b) => b !== 0) ||
    view.getBigUint64(48, true) !== 0n || !END_MAGIC.every((b, i) => bytes[56 + i] === b)
  ) {
    throw new InputError("backup stream trailer is malformed (corrupt stream)");
  }
  const trailer: StreamTrailer = {
    records: getU64(view, 8, "record count"),
    dataBytes: getU64(view, 16, "data byte count"),
    zeroBytes: getU64(view, 24, "zero byte count"),
    storedBytes: getU64(view, 32, "stored byte count"),
    checksum: hex64(checksum),
  };
  for (const key of ["records", "dataBytes", "zeroBytes", "storedBytes"] as const) {
    if (trailer[key] !== counted[key]) {
      throw new InputError(
        `backup stream trailer says ${key}=${trailer[key]} but the stream holds ${counted[key]}`,
      );
    }
  }
  return trailer;
}

/** A u64 as 16 lower-case hex digits. */
export function hex64(v: bigint): string {
  return v.toString(16).padStart(16, "0");
}
