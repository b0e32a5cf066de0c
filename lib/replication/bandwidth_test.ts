import assert from "node:assert/strict";
import { UsageError } from "../core/errors.ts";
import { parseBandwidth, TokenBucket } from "./bandwidth.ts";

Deno.test("rates: bare prefixes are bits, B is bytes", () => {
  assert.deepStrictEqual(parseBandwidth("100M")?.bytesPerSecond, 12.5e6);
  assert.deepStrictEqual(parseBandwidth("100Mbit")?.bytesPerSecond, 12.5e6);
  assert.deepStrictEqual(parseBandwidth("12MB")?.bytesPerSecond, 12e6);
  assert.deepStrictEqual(parseBandwidth("12MB/s")?.bytesPerSecond, 12e6);
  assert.deepStrictEqual(parseBandwidth("1MiB")?.bytesPerSecond, 1 << 20);
  assert.deepStrictEqual(parseBandwidth("800")?.bytesPerSecond, 100);
  assert.deepStrictEqual(parseBandwidth("100M")?.description, "100 Mbit/s (12.5 MB/s)");
  assert.deepStrictEqual(parseBandwidth("12MB")?.description, "12 MB/s");
  assert.deepStrictEqual(parseBandwidth("unlimited"), null);
  assert.throws(() => parseBandwidth("fast"), UsageError);
  assert.throws(() => parseBandwidth("1b"), UsageError);
});

Deno.test("the token bucket holds the long-run rate", () => {
  const bucket = new TokenBucket(1000, 100, 0);
  let now = 0;
  for (let i = 0; i < 100; i++) now += bucket.take(50, now);
  // 5000 bytes at 1000 B/s, less the 100-byte burst: 4.9 s.
  assert.ok(Math.abs(now - 4900) <= 1);
  assert.deepStrictEqual(bucket.take(10, now + 10_000), 0);
});
