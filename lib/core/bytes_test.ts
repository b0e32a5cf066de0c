import assert from "node:assert/strict";
import { concatBytes, formatBytes } from "./bytes.ts";

Deno.test("concatBytes joins the parts in order, including empty ones", () => {
  const joined = concatBytes(Uint8Array.of(1, 2), new Uint8Array(0), Uint8Array.of(3));
  assert.deepEqual(joined, Uint8Array.of(1, 2, 3));
});

Deno.test("concatBytes of nothing is empty and copies rather than aliasing", () => {
  assert.equal(concatBytes().length, 0);
  const part = Uint8Array.of(7);
  const joined = concatBytes(part);
  part[0] = 8;
  assert.equal(joined[0], 7);
});

Deno.test("formatBytes: binary units", () => {
  assert.equal(formatBytes(512), "512 B");
  assert.equal(formatBytes(1536), "1.5 KiB");
  assert.equal(formatBytes(3 * 2 ** 40), "3.0 TiB");
});
