import assert from "node:assert/strict";
import { InputError, UsageError } from "../core/errors.ts";
import { openFrame, sealFrame } from "./frames.ts";
import {
  decodeHello,
  deriveSessionKeys,
  encodeHello,
  newHello,
  proofMatches,
  validatePsk,
} from "./handshake.ts";

const PSK = "0123456789abcdef0123456789abcdef";

Deno.test("short pre-shared keys are refused without showing them", () => {
  assert.throws(
    () => validatePsk("short-secret-key"),
    (err: Error) => err instanceof UsageError && !err.message.includes("short-secret-key"),
  );
  assert.deepStrictEqual(validatePsk(PSK), PSK);
});

Deno.test("hellos round-trip and wrong roles, versions and magic are refused", () => {
  const nonce = new Uint8Array(32).fill(4);
  const hello = encodeHello("sender", nonce);
  assert.deepStrictEqual(decodeHello(hello, "sender").nonce, nonce);
  assert.throws(() => decodeHello(hello, "receiver"), InputError);
  const v2 = hello.slice();
  v2[4] = 2;
  assert.throws(() => decodeHello(v2, "sender"), InputError);
  assert.throws(
    () =>
      decodeHello(new TextEncoder().encode("GET / HTTP/1.1\r\n".repeat(3).slice(0, 40)), "sender"),
    InputError,
  );
});

Deno.test("both sides derive the same keys; a different PSK or nonce gives different ones", async () => {
  const s = newHello("sender");
  const r = newHello("receiver");
  const a = await deriveSessionKeys(PSK, s, r);
  const b = await deriveSessionKeys(PSK, s, r);
  assert.ok(proofMatches(a.senderProof, b.senderProof));
  assert.ok(!proofMatches(a.senderProof, a.receiverProof));
  const frame = await sealFrame(a.senderToReceiver, 0n, new Uint8Array([1]));
  assert.deepStrictEqual(
    await openFrame(b.senderToReceiver, 0n, frame.body),
    new Uint8Array([1]),
  );
  const wrong = await deriveSessionKeys(PSK.replace("0", "x"), s, r);
  assert.ok(!proofMatches(wrong.senderProof, a.senderProof));
  const fresh = await deriveSessionKeys(PSK, s, newHello("receiver"));
  assert.ok(!proofMatches(fresh.senderProof, a.senderProof));
});
