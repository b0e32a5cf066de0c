import assert from "node:assert/strict";
import { describeRate, TokenBucket } from "./bandwidth.ts";

Deno.test("rates are described in bytes and bits", () => {
  assert.equal(describeRate(12.5e6), "12.5 MB/s (100 Mbit/s)");
  assert.equal(describeRate(500), "500 B/s (4 kbit/s)");
});

Deno.test("the token bucket holds the long-run rate", () => {
  const bucket = new TokenBucket(1000, 100, 0);
  let now = 0;
  for (let i = 0; i < 100; i++) now += bucket.take(50, now);
  // 5000 bytes at 1000 B/s, less the 100-byte burst: 4.9 s.
  assert.ok(Math.abs(now - 4900) <= 1);
  assert.deepStrictEqual(bucket.take(10, now + 10_000), 0);
});
