import assert from "node:assert/strict";
import { holderBitmap, isLockBitmap, parseHolder } from "./disk_lock.ts";
import { isScopedBitmap } from "./checkpoint.ts";

Deno.test("disk lock: the holder bitmap names pid, start time and host, and reads back", () => {
  const holder = { pid: 4242, start: 987654, host: "kvm-1.example" };
  const name = holderBitmap(holder);
  assert.equal(name, "dirtybit-lock@4242:987654:kvm-1.example");
  assert.deepEqual(parseHolder(name), holder);
  assert.equal(parseHolder("dirtybit-lock"), undefined);
  assert.equal(parseHolder("dirtybit-inc-c1@0123456789ab"), undefined);
  assert.ok(isLockBitmap("dirtybit-lock") && isLockBitmap(name));
  // No checkpoint code of any scope ever takes a lock bitmap for its own.
  assert.ok(!isScopedBitmap(name) && !isScopedBitmap("dirtybit-lock", "lock"));
});
