import assert from "node:assert/strict";
import { BufferPool } from "./buffer_pool.ts";

Deno.test("buffer pool: a given-back buffer is taken again, up to `keep` are kept", () => {
  const pool = new BufferPool(1024, 1);
  const a = pool.take(100);
  assert.equal(a.length, 100);
  assert.equal(a.buffer.byteLength, 1024);
  const b = pool.take(1024);
  pool.give(a);
  pool.give(b);
  assert.equal(pool.kept, 1);
  assert.equal(pool.take(10).buffer, a.buffer);
  assert.notEqual(pool.take(10).buffer, b.buffer);
});

Deno.test("buffer pool: oversized takes get their own buffer, dropped when given back", () => {
  const pool = new BufferPool(1024, 4);
  const big = pool.take(2048);
  assert.equal(big.length, 2048);
  pool.give(big);
  assert.equal(pool.kept, 0);
});

Deno.test("buffer pool: a buffer given back twice is refused", () => {
  const pool = new BufferPool(64, 4);
  const a = pool.take(64);
  pool.give(a);
  assert.throws(() => pool.give(a.subarray(1)), RangeError);
});
