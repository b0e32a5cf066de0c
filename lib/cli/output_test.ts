import assert from "node:assert/strict";
import { openOutput } from "./output.ts";

Deno.test("openOutput: a failed command removes its regular file but never a FIFO", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-output-" });
  try {
    const fifo = `${dir}/pipe`;
    assert.ok((await new Deno.Command("mkfifo", { args: [fifo] }).output()).success);
    const reader = new Deno.Command("sh", { args: ["-c", `cat ${fifo}`], stdout: "piped" })
      .spawn();
    const viaFifo = await openOutput(fifo);
    const w = viaFifo.writable.getWriter();
    await w.write(new TextEncoder().encode("through"));
    await w.close();
    await viaFifo.discard();
    assert.equal(new TextDecoder().decode((await reader.output()).stdout), "through");
    assert.ok(Deno.lstatSync(fifo).isFifo, "the FIFO stays, not truncated, renamed or removed");

    const file = `${dir}/out.img`;
    const regular = await openOutput(file);
    await regular.writable.close();
    await regular.discard();
    assert.throws(() => Deno.statSync(file), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
