import assert from "node:assert/strict";
import zlib from "node:zlib";
import { canDecompressInto, decompressInto } from "./zstd.ts";

Deno.test({
  name: "libzstd decompresses into the caller's buffer; corrupt input and short room are errors",
  ignore: !canDecompressInto(),
  fn() {
    const data = new Uint8Array(300_000).map((_, i) => (i * 31) % 251);
    const frame = new Uint8Array(zlib.zstdCompressSync(data));
    const out = new Uint8Array(data.length);
    assert.equal(decompressInto(frame, out), data.length);
    assert.deepEqual(out, data);
    assert.ok(decompressInto(frame.subarray(2), out) instanceof Error);
    assert.ok(decompressInto(frame, out.subarray(0, 1000)) instanceof Error);
  },
});
