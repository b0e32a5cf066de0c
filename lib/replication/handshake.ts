/**
 * The replication handshake, without I/O. The sender (client) and the
 * receiver (server) each send a 40-byte hello with a fresh 32-byte random
 * nonce; both derive this connection's keys with HKDF-SHA256 from the
 * pre-shared key, salted with the hash of both hellos; then each proves it
 * knows the key by sending, as its first sealed frame, a proof over that
 * transcript. The receiver proves second, and only to a sender that proved
 * first. Byte layout in docs/replication-protocol.md.
 *
 * @module
 */
import { InputError, UsageError } from "../core/errors.ts";
import { type DirectionKeys, MAGIC, PROTOCOL_VERSION } from "./frames.ts";
import { concatBytes } from "../core/bytes.ts";

/** Bytes of a hello message. */
export const HELLO_BYTES = 40;
/** Bytes of the random nonce in a hello. */
export const NONCE_BYTES = 32;
/** Shortest pre-shared key accepted, in characters. */
export const MIN_PSK_CHARS = 32;

/** Which end of the channel a hello or proof comes from. */
export type Role = "sender" | "receiver";

const ROLE_BYTE: Record<Role, number> = { sender: 1, receiver: 2 };
const KEY_INFO = new TextEncoder().encode("dirtybit replication v1 keys");
const PROOF_LABEL: Record<Role, Uint8Array> = {
  sender: new TextEncoder().encode("dirtybit replication v1 sender proof"),
  receiver: new TextEncoder().encode("dirtybit replication v1 receiver proof"),
};

/** A decoded hello. */
export interface Hello {
  readonly role: Role;
  readonly nonce: Uint8Array;
}

/**
 * Checks a pre-shared key: at least {@link MIN_PSK_CHARS} characters. The
 * message never contains the key.
 */
export function validatePsk(psk: string, origin = "the pre-shared key"): string {
  if ([...psk].length < MIN_PSK_CHARS) {
    throw new UsageError(
      `${origin} has ${
        [...psk].length
      } characters, at least ${MIN_PSK_CHARS} are required: generate one with 'head -c 32 /dev/urandom | base64'`,
    );
  }
  return psk;
}

/** Encodes a hello: magic, version, role, two reserved zero bytes, nonce. */
export function encodeHello(role: Role, nonce: Uint8Array): Uint8Array {
  if (nonce.length !== NONCE_BYTES) throw new RangeError("hello nonce must be 32 bytes");
  const hello = new Uint8Array(HELLO_BYTES);
  hello.set(MAGIC, 0);
  hello[4] = PROTOCOL_VERSION;
  hello[5] = ROLE_BYTE[role];
  hello.set(nonce, 8);
  return hello;
}

/** Creates this side's hello with a fresh random nonce. */
export function newHello(role: Role): Uint8Array {
  return encodeHello(role, crypto.getRandomValues(new Uint8Array(NONCE_BYTES)));
}

/** Decodes and checks the peer's hello; `expected` is the role the peer must have. */
export function decodeHello(bytes: Uint8Array, expected: Role): Hello {
  if (bytes.length !== HELLO_BYTES || !MAGIC.every((b, i) => bytes[i] === b)) {
    throw new InputError("the peer is not a dirtybit replication endpoint (bad hello)");
  }
  if (bytes[4] !== PROTOCOL_VERSION) {
    throw new InputError(
      `the peer speaks replication protocol version ${
        bytes[4]
      }, this dirtybit speaks ${PROTOCOL_VERSION}: upgrade the older side`,
    );
  }
  if (bytes[5] !== ROLE_BYTE[expected] || bytes[6] !== 0 || bytes[7] !== 0) {
    throw new InputError(
      `the peer's hello is not a ${expected}'s: connect a sender to a receiver`,
    );
  }
  return { role: expected, nonce: bytes.slice(8) };
}

/** Everything a connection needs after the hellos. */
export interface SessionKeys {
  readonly senderToReceiver: DirectionKeys;
  readonly receiverToSender: DirectionKeys;
  /** The proof the sender must send. */
  readonly senderProof: Uint8Array;
  /** The proof the receiver must send. */
  readonly receiverProof: Uint8Array;
}

/**
 * Derives this connection's keys: HKDF-SHA256 over the UTF-8 pre-shared key
 * with salt SHA-256(clientHello || serverHello) yields 104 bytes, cut into
 * two AES-256 keys, two nonce prefixes and a 32-byte proof key.
 */
export async function deriveSessionKeys(
  psk: string,
  senderHello: Uint8Array,
  receiverHello: Uint8Array,
): Promise<SessionKeys> {
  const transcript = concatBytes(senderHello, receiverHello);
  const salt = new Uint8Array(await crypto.subtle.digest("SHA-256", transcript));
  const ikm = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(psk),
    "HKDF",
    false,
    ["deriveBits"],
  );
  const okm = new Uint8Array(
    await crypto.subtle.deriveBits(
      { name: "HKDF", hash: "SHA-256", salt, info: KEY_INFO },
      ikm,
      104 * 8,
    ),
  );
  const aesKey = (bytes: Uint8Array) =>
    crypto.subtle.importKey("raw", bytes as Uint8Array<ArrayBuffer>, "AES-GCM", false, [
      "encrypt",
      "decrypt",
    ]);
  const proofKey = await crypto.subtle.importKey(
    "raw",
    okm.slice(72, 104),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const proof = async (role: Role) =>
    new Uint8Array(
      await crypto.subtle.sign("HMAC", proofKey, concatBytes(PROOF_LABEL[role], transcript)),
    );
  return {
    senderToReceiver: {
      direction: "sender-to-receiver",
      key: await aesKey(okm.slice(0, 32)),
      ivPrefix: okm.slice(64, 68),
    },
    receiverToSender: {
      direction: "receiver-to-sender",
      key: await aesKey(okm.slice(32, 64)),
      ivPrefix: okm.slice(68, 72),
    },
    senderProof: await proof("sender"),
    receiverProof: await proof("receiver"),
  };
}

/** Compares a received proof with the expected one without an early exit. */
export function proofMatches(received: Uint8Array, expected: Uint8Array): boolean {
  if (received.length !== expected.length) return false;
  let diff = 0;
  for (let i = 0; i < expected.length; i++) diff |= received[i] ^ expected[i];
  return diff === 0;
}
