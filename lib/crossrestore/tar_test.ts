import assert from "node:assert/strict";
import { MAX_USTAR_SIZE, TAR_BLOCK, tarEnd, tarHeader, tarPadding } from "./tar.ts";

function field(block: Uint8Array, offset: number, length: number): string {
  return new TextDecoder().decode(block.subarray(offset, offset + length)).replace(/\0.*$/s, "");
}

Deno.test("tarHeader: ustar fields and a checksum that verifies", () => {
  const h = tarHeader("vm.ovf", 1234, 1_700_000_000);
  assert.equal(h.length, TAR_BLOCK);
  assert.equal(field(h, 0, 100), "vm.ovf");
  assert.equal(parseInt(field(h, 124, 12), 8), 1234);
  assert.equal(parseInt(field(h, 136, 12), 8), 1_700_000_000);
  assert.equal(String.fromCharCode(h[156]), "0");
  assert.equal(field(h, 257, 6), "ustar");
  const stored = parseInt(field(h, 148, 8), 8);
  const copy = h.slice();
  copy.fill(0x20, 148, 156);
  assert.equal(stored, copy.reduce((a, b) => a + b, 0));
});

Deno.test("tarHeader: sizes past 8 GiB use base-256; bad names and sizes throw", () => {
  const big = MAX_USTAR_SIZE + 1;
  const h = tarHeader("disk.vmdk", big, 0);
  assert.equal(h[124], 0x80);
  let v = 0n;
  for (let i = 125; i < 136; i++) v = (v << 8n) | BigInt(h[i]);
  assert.equal(v, BigInt(big));
  assert.throws(() => tarHeader("x".repeat(101), 1, 0), /longer than 100/);
  assert.throws(() => tarHeader("x", -1, 0), RangeError);
});

Deno.test("tarPadding and tarEnd", () => {
  assert.equal(tarPadding(0).length, 0);
  assert.equal(tarPadding(1).length, 511);
  assert.equal(tarPadding(512).length, 0);
  assert.equal(tarEnd().length, 1024);
});
