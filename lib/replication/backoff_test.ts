import assert from "node:assert/strict";
import { retryDelayMs, withRetries } from "./backoff.ts";

Deno.test("delays double from retry_delay_ms and add up to retry_jitter_ms", () => {
  const p = { count: 3, delayMs: 100, jitterMs: 50 };
  assert.deepStrictEqual([1, 2, 3].map((n) => retryDelayMs(p, n, 0)), [100, 200, 400]);
  assert.deepStrictEqual(retryDelayMs(p, 1, 0.5), 125);
  assert.deepStrictEqual(retryDelayMs({ ...p, maxDelayMs: 150 }, 3, 0), 150);
});

Deno.test("withRetries retries retryable errors retry_count times, others never", async () => {
  const waits: number[] = [];
  const hooks = {
    retryable: (e: unknown) => e instanceof RangeError,
    sleep: (ms: number) => (waits.push(ms), Promise.resolve()),
    random: () => 0,
  };
  let calls = 0;
  const ok = await withRetries({ count: 3, delayMs: 10, jitterMs: 5 }, hooks, () => {
    calls++;
    return calls < 3 ? Promise.reject(new RangeError("x")) : Promise.resolve("done");
  });
  assert.deepStrictEqual([ok, calls, waits], ["done", 3, [10, 20]]);
  calls = 0;
  await assert.rejects(() =>
    withRetries({ count: 2, delayMs: 1, jitterMs: 0 }, hooks, () => {
      calls++;
      return Promise.reject(new RangeError("down"));
    }), RangeError);
  assert.deepStrictEqual(calls, 3);
  calls = 0;
  await assert.rejects(() =>
    withRetries({ count: 2, delayMs: 1, jitterMs: 0 }, hooks, () => {
      calls++;
      return Promise.reject(new TypeError("bad"));
    }), TypeError);
  assert.deepStrictEqual(calls, 1);
});
