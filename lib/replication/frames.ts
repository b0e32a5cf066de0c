/**
 * The record layer of the replication channel: every frame after the hellos
 * is `u32 length || AES-256-GCM(ciphertext || tag)`, sealed with a
 * per-direction key and a per-direction sequence number that is part of both
 * the nonce and the additional authenticated data. A replayed, reordered,
 * dropped, truncated or altered frame therefore fails to open. No I/O here;
 * byte layout in docs/replication-protocol.md.
 *
 * @module
 */
import { InputError } from "../core/errors.ts";

/** Protocol magic, first bytes of both hellos and of every frame's AAD. */
export const MAGIC = new TextEncoder().encode("DBRP");
/** Protocol version carried in the hellos and bound into every frame. */
export const PROTOCOL_VERSION = 1;
/** Bytes of the length prefix in front of every frame. */
export const FRAME_HEADER_BYTES = 4;
/** Bytes of the GCM authentication tag at the end of every frame. */
export const TAG_BYTES = 16;
/** Largest plaintext a frame may carry: a 4 MiB data chunk plus its record header. */
export const MAX_PLAINTEXT_BYTES = (4 << 20) + 64;
/** Largest value the length prefix may hold; larger ones are refused before any allocation. */
export const MAX_FRAME_BYTES = MAX_PLAINTEXT_BYTES + TAG_BYTES;

/** Which way a frame travels; it selects the key and is bound into the AAD. */
export type Direction = "sender-to-receiver" | "receiver-to-sender";

const DIRECTION_BYTE: Record<Direction, number> = {
  "sender-to-receiver": 1,
  "receiver-to-sender": 2,
};

/** Key material for one direction of one connection (from the handshake). */
export interface DirectionKeys {
  readonly direction: Direction;
  readonly key: CryptoKey;
  /** 4 bytes, the fixed part of every nonce in this direction. */
  readonly ivPrefix: Uint8Array;
}

/** 12-byte GCM nonce: the direction's 4-byte prefix, then the 64-bit sequence number. */
export function frameNonce(ivPrefix: Uint8Array, seq: bigint): Uint8Array<ArrayBuffer> {
  if (ivPrefix.length !== 4) throw new RangeError("nonce prefix must be 4 bytes");
  const iv = new Uint8Array(12);
  iv.set(ivPrefix, 0);
  new DataView(iv.buffer).setBigUint64(4, seq);
  return iv;
}

/** Additional authenticated data: magic, version, direction, sequence number, frame length. */
export function frameAad(
  direction: Direction,
  seq: bigint,
  length: number,
): Uint8Array<ArrayBuffer> {
  const aad = new Uint8Array(18);
  aad.set(MAGIC, 0);
  aad[4] = PROTOCOL_VERSION;
  aad[5] = DIRECTION_BYTE[direction];
  const view = new DataView(aad.buffer);
  view.setBigUint64(6, seq);
  view.setUint32(14, length);
  return aad;
}

/**
 * Checks a frame's length prefix before its body is read: frames shorter than
 * a tag plus one byte, or longer than {@link MAX_FRAME_BYTES}, are refused.
 */
export function checkFrameLength(length: number): number {
  if (length < TAG_BYTES + 1 || length > MAX_FRAME_BYTES) {
    throw new InputError(
      `replication frame of ${length} bytes is outside 17..${MAX_FRAME_BYTES}: the peer is not a dirtybit peer or the stream is corrupt`,
    );
  }
  return length;
}

/** A sealed frame as two parts, written one after the other (no concatenation copy). */
export interface SealedFrame {
  /** The 4-byte length prefix. */
  header: Uint8Array;
  /** Ciphertext and tag. */
  body: Uint8Array;
}

/**
 * Seals `plaintext` as frame number `seq`. WebCrypto copies the plaintext
 * before this returns, so the caller may reuse its buffer at once.
 */
export function sealFrame(
  keys: DirectionKeys,
  seq: bigint,
  plaintext: Uint8Array,
): Promise<SealedFrame> {
  if (plaintext.length < 1 || plaintext.length > MAX_PLAINTEXT_BYTES) {
    throw new RangeError(`frame plaintext of ${plaintext.length} bytes is out of range`);
  }
  const length = plaintext.length + TAG_BYTES;
  const header = new Uint8Array(FRAME_HEADER_BYTES);
  new DataView(header.buffer).setUint32(0, length);
  const sealing = crypto.subtle.encrypt(
    {
      name: "AES-GCM",
      iv: frameNonce(keys.ivPrefix, seq),
      additionalData: frameAad(keys.direction, seq, length),
      tagLength: TAG_BYTES * 8,
    },
    keys.key,
    plaintext as Uint8Array<ArrayBuffer>,
  );
  return sealing.then((sealed) => ({ header, body: new Uint8Array(sealed) }));
}

/**
 * Opens frame body `body` (the bytes after the length prefix) expected as
 * number `seq`. Any mismatch — wrong key, wrong sequence number, altered
 * byte, cut-off body — is an {@link InputError}.
 */
export async function openFrame(
  keys: DirectionKeys,
  seq: bigint,
  body: Uint8Array,
): Promise<Uint8Array> {
  checkFrameLength(body.length);
  try {
    return new Uint8Array(
      await crypto.subtle.decrypt(
        {
          name: "AES-GCM",
          iv: frameNonce(keys.ivPrefix, seq),
          additionalData: frameAad(keys.direction, seq, body.length),
          tagLength: TAG_BYTES * 8,
        },
        keys.key,
        body as Uint8Array<ArrayBuffer>,
      ),
    );
  } catch {
    throw new InputError(
      `replication frame ${seq} failed authentication: it was altered, replayed or reordered, or the keys differ`,
    );
  }
}
