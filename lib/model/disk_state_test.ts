import assert from "node:assert/strict";
import { ownerId } from "./disk_state.ts";

Deno.test("ownerId: made once, the same for runs that start together, kept across calls", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-test-" });
  try {
    const ids = await Promise.all(Array.from({ length: 8 }, () => ownerId(dir)));
    assert.match(ids[0], /^[0-9a-f]{12}$/);
    assert.deepEqual(new Set(ids).size, 1);
    assert.equal(await ownerId(dir), ids[0]);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["owner-id"]);
    await Deno.writeTextFile(`${dir}/owner-id`, "not an id\n");
    await assert.rejects(() => ownerId(dir), /does not hold an owner id/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
