import assert from "node:assert/strict";
import { delay } from "./async.ts";
import { DependencyError } from "./errors.ts";
import { alive, selfStamp, stampAlive, startError } from "./process.ts";

Deno.test("a stamp names this process; a reused or gone pid is not alive", async () => {
  const me = await selfStamp();
  assert.equal(me.pid, Deno.pid);
  assert.ok(await stampAlive(me));
  assert.ok(!(await stampAlive({ ...me, start: me.start + 1 })));
  assert.ok(!(await alive(2 ** 22 + 1)));
});

Deno.test("a helper process dies with the process that started it, even by SIGKILL", async () => {
  const module = new URL("./process.ts", import.meta.url).href;
  const parent = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { helperCommand } from "${module}";
       const c = helperCommand("sleep", { args: ["600"], stdin: "null" }).spawn();
       console.log(c.pid);
       await c.status;`,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = parent.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const helper = Number((await reader.read()).value?.trim());
  assert.ok(await alive(helper), "the helper runs");
  parent.kill("SIGKILL");
  await parent.status;
  await reader.cancel();
  for (let i = 0; i < 100 && await alive(helper); i++) await delay(20);
  assert.ok(!(await alive(helper)), `sleep ${helper} outlived its killed parent`);
});

Deno.test("a missing helper program is a DependencyError naming its Debian package", async () => {
  // What spawn throws for a program not on PATH.
  let notFound: unknown;
  try {
    await new Deno.Command("dirtybit-no-such-program").output();
  } catch (e) {
    notFound = e;
  }
  assert.ok(notFound instanceof Deno.errors.NotFound);
  const err = startError("qemu-img", notFound);
  assert.ok(err instanceof DependencyError);
  assert.equal(err.message, "qemu-img not found: install the Debian package qemu-utils");
  const other = new Error("permission denied");
  assert.equal(startError("mount", other), other);
});
