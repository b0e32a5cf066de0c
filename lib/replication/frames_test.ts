import assert from "node:assert/strict";
import { InputError } from "../core/errors.ts";
import {
  checkFrameLength,
  type DirectionKeys,
  MAX_FRAME_BYTES,
  openFrame,
  sealFrame,
} from "./frames.ts";

async function keys(direction: DirectionKeys["direction"]): Promise<DirectionKeys> {
  const key = await crypto.subtle.importKey("raw", new Uint8Array(32).fill(9), "AES-GCM", false, [
    "encrypt",
    "decrypt",
  ]);
  return { direction, key, ivPrefix: new Uint8Array([1, 2, 3, 4]) };
}

Deno.test("a sealed frame opens with the same key and sequence number", async () => {
  const k = await keys("sender-to-receiver");
  const frame = await sealFrame(k, 7n, new Uint8Array([1, 2, 3]));
  assert.deepStrictEqual(new DataView(frame.header.buffer).getUint32(0), 3 + 16);
  assert.deepStrictEqual(await openFrame(k, 7n, frame.body), new Uint8Array([1, 2, 3]));
});

Deno.test("altered, replayed, reordered and misdirected frames are rejected", async () => {
  const k = await keys("sender-to-receiver");
  const frame = await sealFrame(k, 3n, new Uint8Array([5, 6, 7, 8]));
  const body = frame.body;
  await assert.rejects(() => openFrame(k, 4n, body), InputError);
  await assert.rejects(() => openFrame(k, 2n, body), InputError);
  const altered = body.slice();
  altered[1] ^= 1;
  await assert.rejects(() => openFrame(k, 3n, altered), InputError);
  await assert.rejects(() => openFrame(k, 3n, body.subarray(0, body.length - 1)), InputError);
  const other = await keys("receiver-to-sender");
  await assert.rejects(() => openFrame(other, 3n, body), InputError);
});

Deno.test("frame lengths outside the limits are refused before reading", () => {
  assert.throws(() => checkFrameLength(16), InputError);
  assert.throws(() => checkFrameLength(MAX_FRAME_BYTES + 1), InputError);
  assert.deepStrictEqual(checkFrameLength(MAX_FRAME_BYTES), MAX_FRAME_BYTES);
});
