import assert from "node:assert/strict";
import {
  SAMPLE_FROM,
  SAMPLE_PIECE,
  SAMPLE_PIECES,
  sampleOf,
  sampleShrinks,
  worthCompressing,
} from "./compression_policy.ts";
import { zstdCompress } from "./zstd.ts";
import { pseudoRandom } from "../../tests/fixtures/bytes.ts";

const MiB = 1 << 20;
const zstdSize = (bytes: Uint8Array) => zstdCompress(bytes, 1).length;

function text(length: number): Uint8Array {
  const line = new TextEncoder().encode("a line of a log file, 0000000042 and so on\n");
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i += line.length) out.set(line.subarray(0, length - i), i);
  return out;
}

Deno.test("the sample is evenly spread pieces, from the first byte to the last", () => {
  const data = new Uint8Array(MiB).map((_, i) => i % 251);
  const sample = sampleOf(data)!;
  assert.equal(sample.length, SAMPLE_PIECES * SAMPLE_PIECE);
  assert.deepEqual(sample.subarray(0, SAMPLE_PIECE), data.subarray(0, SAMPLE_PIECE));
  assert.deepEqual(sample.subarray(-SAMPLE_PIECE), data.subarray(-SAMPLE_PIECE));
  const step = (MiB - SAMPLE_PIECE) / (SAMPLE_PIECES - 1);
  const third = Math.floor(3 * step);
  assert.deepEqual(
    sample.subarray(3 * SAMPLE_PIECE, 4 * SAMPLE_PIECE),
    data.subarray(third, third + SAMPLE_PIECE),
  );
});

Deno.test("short records are compressed whole, without a sample", () => {
  let calls = 0;
  const counting = () => {
    calls++;
    return 0;
  };
  assert.equal(sampleOf(new Uint8Array(SAMPLE_FROM)), null);
  assert.equal(worthCompressing(pseudoRandom(SAMPLE_FROM, 1), counting), true);
  assert.equal(calls, 0);
  worthCompressing(new Uint8Array(SAMPLE_FROM + 1), counting);
  assert.equal(calls, 1);
});

Deno.test("a sample must save at least 1/32 for the record to be compressed", () => {
  assert.equal(sampleShrinks(32768, 32768), false);
  assert.equal(sampleShrinks(32768, 32768 + 20), false);
  assert.equal(sampleShrinks(32768, 31744), false);
  assert.equal(sampleShrinks(32768, 31743), true);
  assert.equal(sampleShrinks(32768, 100), true);
});

Deno.test("with zstd: random data is stored raw, text, zeros and mixed records are compressed", () => {
  assert.equal(worthCompressing(pseudoRandom(MiB, 7), zstdSize), false);
  assert.equal(worthCompressing(text(MiB), zstdSize), true);
  assert.equal(worthCompressing(new Uint8Array(MiB), zstdSize), true);
  // Random at the start (where the first piece is) and text after it, as the benchmark's text half.
  const mixed = text(MiB);
  mixed.set(pseudoRandom(4096, 8), 0);
  assert.equal(worthCompressing(mixed, zstdSize), true);
  // Half random, half zeros.
  const half = new Uint8Array(MiB);
  half.set(pseudoRandom(MiB / 2, 9), 0);
  assert.equal(worthCompressing(half, zstdSize), true);
});
