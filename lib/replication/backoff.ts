/**
 * Retries with exponential back-off and jitter (`retry_count`,
 * `retry_delay_ms`, `retry_jitter_ms`). The delay rule is pure; the loop
 * takes its sleep and random source as arguments so tests need not wait.
 *
 * @module
 */
import { delay } from "../core/async.ts";

/** The retry parameters (`retry_count`, `retry_delay_ms`, `retry_jitter_ms`). */
export interface RetryPolicy {
  /** Retries after the first attempt (0 = try once). */
  readonly count: number;
  /** Delay before the first retry; doubled for each further one. */
  readonly delayMs: number;
  /** Up to this much random delay is added to every wait. */
  readonly jitterMs: number;
  /** Cap on one wait before jitter (default 5 minutes). */
  readonly maxDelayMs?: number;
}

/** Their defaults: 3 retries, 5 s, 1 s jitter. */
export const DEFAULT_RETRY: RetryPolicy = { count: 3, delayMs: 5000, jitterMs: 1000 };

/** Delay before retry number `retry` (1-based); `random` is in [0, 1). */
export function retryDelayMs(policy: RetryPolicy, retry: number, random: number): number {
  const base = Math.min(policy.delayMs * 2 ** (retry - 1), policy.maxDelayMs ?? 300_000);
  return Math.round(base + random * policy.jitterMs);
}

/** Hooks of {@link withRetries}. */
export interface RetryHooks {
  /** Whether an error is worth retrying (transport trouble); others are thrown at once. */
  retryable(err: unknown): boolean;
  /** Called before each wait, e.g. to log. */
  onRetry?(err: unknown, retry: number, delayMs: number): void;
  /** Waits; rejects to give up early (cancellation). Default: setTimeout. */
  sleep?(ms: number): Promise<void>;
  random?(): number;
}

/** Runs `attempt` until it succeeds, retrying retryable errors per `policy`. */
export async function withRetries<T>(
  policy: RetryPolicy,
  hooks: RetryHooks,
  attempt: (n: number) => Promise<T>,
): Promise<T> {
  const sleep = hooks.sleep ?? delay;
  const random = hooks.random ?? Math.random;
  for (let retry = 0;; retry++) {
    try {
      return await attempt(retry);
    } catch (err) {
      if (retry >= policy.count || !hooks.retryable(err)) throw err;
      const delay = retryDelayMs(policy, retry + 1, random());
      hooks.onRetry?.(err, retry + 1, delay);
      await sleep(delay);
    }
  }
}
