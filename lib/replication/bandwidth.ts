/**
 * `bandwidth_limit`: a token bucket that paces the sender, and a description
 * of the rate. Pure: the caller supplies the clock and does the waiting.
 *
 * @module
 */
/**
 * Says a rate both ways, so the operator sees whether bits or bytes were
 * meant (`bandwidth_limit` is parsed by lib/params/params.ts into bytes/s):
 * `12.5 MB/s (100 Mbit/s)`.
 */
export function describeRate(bytesPerSecond: number): string {
  return `${scaled(bytesPerSecond, "B/s")} (${scaled(bytesPerSecond * 8, "bit/s")})`;
}

function scaled(n: number, unit: string): string {
  for (const [factor, prefix] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]] as const) {
    if (n >= factor) return `${+(n / factor).toFixed(3)} ${prefix}${unit}`;
  }
  return `${+n.toFixed(3)} ${unit}`;
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
