import assert from "node:assert/strict";
import {
  COMPRESSION_RULE,
  DEFAULT_COMPRESSION,
  parseCompression,
  zstdLevel,
} from "./compression.ts";

Deno.test("parseCompression: none, zstd:N in range, and a plain zstd at the default level", () => {
  assert.equal(parseCompression("none"), "none");
  assert.equal(parseCompression("zstd:1"), "zstd:1");
  assert.equal(parseCompression("zstd:19"), "zstd:19");
  assert.equal(parseCompression("zstd"), DEFAULT_COMPRESSION);
  assert.equal(zstdLevel(parseCompression("zstd")!), 3);
  assert.equal(zstdLevel("none"), 0);
});

Deno.test("parseCompression: anything else is null, and the rule names what is allowed", () => {
  for (
    const bad of ["", "zstd:", "zstd:0", "zstd:20", "zstd:22", "none:3", "gzip", "ZSTD", "zstd:3x"]
  ) {
    assert.equal(parseCompression(bad), null, bad);
  }
  assert.match(COMPRESSION_RULE, /none, zstd or zstd:N with N from 1 to 19/);
});
