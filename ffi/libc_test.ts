import assert from "node:assert/strict";

/** What `growPipe(1)` returns in a child whose stdout is `stdout`. */
async function growStdout(stdout: "piped" | "null"): Promise<number | null> {
  const libc = new URL("./libc.ts", import.meta.url).href;
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { growPipe } from "${libc}"; console.error(JSON.stringify(growPipe(1)));`,
    ],
    stdout,
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stderr));
}

Deno.test("growPipe grows a pipe to 1 MiB and leaves anything else alone", async () => {
  const max = Number(await Deno.readTextFile("/proc/sys/fs/pipe-max-size"));
  // Below 1 MiB only a privileged process could grow it that far.
  if (max >= 1 << 20) assert.equal(await growStdout("piped"), 1 << 20);
  assert.equal(await growStdout("null"), null);
});
