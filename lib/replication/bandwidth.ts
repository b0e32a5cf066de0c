/**
 * `bandwidth_limit`: parsing the operator's rate and a token bucket that
 * paces the sender. Pure: the caller supplies the clock and does the waiting.
 *
 * @module
 */
import { UsageError } from "../core/errors.ts";

/** A parsed rate, in bytes per second, with how the operator wrote it. */
export interface BandwidthLimit {
  readonly bytesPerSecond: number;
  /** Human description saying whether bits or bytes were meant, e.g. `100 Mbit/s (12.5 MB/s)`. */
  readonly description: string;
}

const PREFIX: Record<string, number> = {
  "": 1,
  k: 1e3,
  m: 1e6,
  g: 1e9,
  t: 1e12,
  ki: 1024,
  mi: 1024 ** 2,
  gi: 1024 ** 3,
  ti: 1024 ** 4,
};

/**
 * Parses a rate: a number, an optional prefix (K, M, G, T decimal; Ki, Mi,
 * Gi, Ti binary) and a unit. A bare prefix or `bit`/`bps`/`b` means bits per
 * second (network convention: `100M` = 100 Mbit/s); `B` or `B/s` means bytes
 * per second (`12MB` = 12 MB/s). `unlimited` or `0` means no limit (null).
 */
export function parseBandwidth(text: string, param = "bandwidth_limit"): BandwidthLimit | null {
  const t = text.trim();
  if (t === "unlimited" || t === "0") return null;
  const m = /^(\d+(?:\.\d+)?)\s*(k|m|g|t|ki|mi|gi|ti)?(b|bit|bits|bps|b\/s|byte|bytes)?(?:\/s)?$/i
    .exec(t);
  if (!m) {
    throw new UsageError(
      `${param} '${text}' is not a rate: write e.g. 100M (100 Mbit/s) or 12MB (12 MB/s)`,
    );
  }
  const value = Number(m[1]);
  const prefix = (m[2] ?? "").toLowerCase();
  const unit = m[3] ?? "";
  const bytes = unit === "B" || unit === "B/s" || /^bytes?$/i.test(unit);
  const perSecond = value * PREFIX[prefix] / (bytes ? 1 : 8);
  if (!(perSecond >= 1) || !Number.isFinite(perSecond)) {
    throw new UsageError(`${param} '${text}' is below 1 byte/s: give a larger rate or 'unlimited'`);
  }
  const shown = `${m[1]} ${m[2] ?? ""}${bytes ? "B/s" : "bit/s"}`;
  return {
    bytesPerSecond: perSecond,
    description: bytes ? shown : `${shown} (${formatBytesPerSecond(perSecond)})`,
  };
}

function formatBytesPerSecond(n: number): string {
  if (n >= 1e9) return `${+(n / 1e9).toFixed(3)} GB/s`;
  if (n >= 1e6) return `${+(n / 1e6).toFixed(3)} MB/s`;
  if (n >= 1e3) return `${+(n / 1e3).toFixed(3)} kB/s`;
  return `${+n.toFixed(3)} B/s`;
}

/**
 * Token bucket: `rate` bytes per second, at most `burst` bytes saved up.
 * {@link TokenBucket.take} charges a send and returns how long to wait before
 * it so that the long-run rate never exceeds `rate`.
 */
export class TokenBucket {
  #tokens: number;
  #last: number;

  constructor(
    readonly rate: number,
    readonly burst: number,
    now: number,
  ) {
    if (!(rate > 0) || !(burst > 0)) throw new RangeError("rate and burst must be positive");
    this.#tokens = burst;
    this.#last = now;
  }

  /** Charges `bytes` at time `now` (ms) and returns the delay in ms before sending them. */
  take(bytes: number, now: number): number {
    this.#tokens = Math.min(this.burst, this.#tokens + (now - this.#last) * this.rate / 1000);
    this.#last = now;
    this.#tokens -= bytes;
    return this.#tokens >= 0 ? 0 : -this.#tokens * 1000 / this.rate;
  }
}
