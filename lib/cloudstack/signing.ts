/**
 * CloudStack API request signing, exactly as the management server verifies
 * it (`ApiServer.verifyRequest`): every parameter except `signature`, sorted by
 * name as sent (Java `String` order, which is UTF-16 code-unit order like
 * JavaScript's default sort), each value encoded like Java's `URLEncoder` with
 * `+` turned into `%20`, joined with `&`, the whole string lower-cased, then
 * HMAC-SHA1 with the secret key and base64. Version 3 adds `signatureVersion=3`
 * and an `expires` time stamp that the server refuses once it has passed.
 *
 * Pure: no I/O.
 *
 * @module
 */
import { createHmac } from "node:crypto";

/** The parameters of one API call, names as they go on the wire. */
export type ApiParams = Record<string, string>;

/** What is needed to sign: the user's key pair. */
export interface ApiKeys {
  readonly apiKey: string;
  readonly secretKey: string;
}

/** Options for {@link signParams}. */
export interface SignOptions {
  /** 1 (plain HMAC, the server's default) or 3 (adds `expires`). Default 3. */
  readonly signatureVersion?: 1 | 3;
  /** When a version 3 signature stops being accepted. Default `now` + 10 min. */
  readonly expires?: Date;
  /** The current time, for the default expiry. */
  readonly now?: Date;
}

/**
 * How long a version 3 signature is valid by default: servers that enforce
 * time stamps refuse an `expires` more than 15 minutes ahead.
 */
export const DEFAULT_EXPIRY_MS = 10 * 60 * 1000;

const UNRESERVED = /[A-Za-z0-9.\-*_]/;
const utf8 = new TextEncoder();

/**
 * Encodes a value like Java's `URLEncoder.encode(value, "UTF-8")` followed by
 * `replaceAll("\\+", "%20")`: letters, digits and `. - * _` stay, a space is
 * `%20`, every other UTF-8 byte is `%XX` (upper-case hex).
 */
export function encodeValue(value: string): string {
  let out = "";
  for (const char of value) {
    if (UNRESERVED.test(char)) {
      out += char;
      continue;
    }
    for (const byte of utf8.encode(char)) {
      out += "%" + byte.toString(16).toUpperCase().padStart(2, "0");
    }
  }
  return out;
}

/** Names in the order the server sorts them (`Collections.sort` of Java strings). */
export function sortedNames(params: ApiParams): string[] {
  return Object.keys(params).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * The string the server signs, before lower-casing: `name=encodedValue` pairs
 * sorted by name, `signature` left out (names are not encoded, as on the server).
 */
export function canonicalQuery(params: ApiParams): string {
  return sortedNames(params)
    .filter((name) => name.toLowerCase() !== "signature")
    .map((name) => `${name}=${encodeValue(params[name])}`)
    .join("&");
}

/** base64(HMAC-SHA1(secretKey, lower-cased canonical query)). */
export function computeSignature(params: ApiParams, secretKey: string): string {
  return createHmac("sha1", utf8.encode(secretKey))
    .update(utf8.encode(canonicalQuery(params).toLowerCase()))
    .digest("base64");
}

/**
 * Formats an `expires` time stamp as `yyyy-MM-dd'T'HH:mm:ssZ` in UTC
 * (`2024-05-01T12:00:00+0000`), the one form every server version parses.
 */
export function formatExpires(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "+0000");
}

/**
 * Returns the parameters of a signed call: the input plus `apiKey`,
 * (for version 3) `signatureVersion` and `expires`, and `signature`.
 */
export function signParams(params: ApiParams, keys: ApiKeys, options: SignOptions = {}): ApiParams {
  const version = options.signatureVersion ?? 3;
  const signed: ApiParams = { ...params, apiKey: keys.apiKey };
  if (version === 3) {
    const now = options.now ?? new Date();
    signed.signatureVersion = "3";
    signed.expires = formatExpires(options.expires ?? new Date(now.getTime() + DEFAULT_EXPIRY_MS));
  }
  signed.signature = computeSignature(signed, keys.secretKey);
  return signed;
}

/** Encodes parameters for the query string or a form body (names encoded too). */
export function encodeQuery(params: ApiParams): string {
  return sortedNames(params)
    .map((name) => `${encodeValue(name)}=${encodeValue(params[name])}`)
    .join("&");
}
