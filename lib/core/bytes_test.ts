import assert from "node:assert/strict";
import { concatBytes } from "./bytes.ts";

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
