/**
 * What every front end of replication derives from its parameters the same
 * way: the pre-shared key, the retry policy, the zstd level and `HOST:PORT`
 * addresses. Structural inputs (the parameter table's fields), so the CLI
 * and the Bacula plugin share them without depending on each other.
 *
 * @module
 */
import { UsageError } from "../core/errors.ts";
import { type Compression, DEFAULT_ZSTD_LEVEL, zstdLevel } from "../stream/compression.ts";
import { DEFAULT_RETRY, type RetryPolicy } from "./backoff.ts";
import { validatePsk } from "./handshake.ts";
import { readPskFile } from "./psk.ts";

/** The key from `psk_file` (preferred) or `psk`; `missing` is the error text without either. */
export async function loadPsk(
  p: { psk?: string; psk_file?: string },
  missing: string,
): Promise<string> {
  if (p.psk_file) return await readPskFile(p.psk_file);
  if (p.psk) return validatePsk(p.psk, "parameter psk");
  throw new UsageError(missing);
}

/** The retry policy of `retry_count`, `retry_delay_ms` and `retry_jitter_ms`. */
export function retryPolicyOf(
  p: { retry_count?: number; retry_delay_ms?: number; retry_jitter_ms?: number },
): RetryPolicy {
  return {
    count: p.retry_count ?? DEFAULT_RETRY.count,
    delayMs: p.retry_delay_ms ?? DEFAULT_RETRY.delayMs,
    jitterMs: p.retry_jitter_ms ?? DEFAULT_RETRY.jitterMs,
  };
}

/** The zstd level of a parsed `compress` (replication always compresses); `what` names the caller. */
export function compressLevelOf(compress: Compression | undefined, what: string): number {
  if (compress === "none") {
    throw new UsageError(
      `${what}: compress=none: replication always compresses: give zstd or zstd:N`,
    );
  }
  return compress === undefined ? DEFAULT_ZSTD_LEVEL : zstdLevel(compress);
}

/** `HOST[:PORT]` (IPv6 in brackets); `what` names the value in the error. */
export function parseHostPort(
  text: string,
  what: string,
  defaultPort: number,
): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(text);
  const port = m?.[2] === undefined ? defaultPort : Number(m[2]);
  if (!m || port < 0 || port > 65535) throw new UsageError(`${what} '${text}' is not HOST:PORT`);
  return { host: m[1].replace(/^\[|\]$/g, ""), port };
}
