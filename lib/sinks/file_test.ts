import { equal, ok } from "node:assert/strict";
import { join } from "node:path";
import { RunRecord } from "../core/run_record.ts";
import { openFileSink } from "./file.ts";
import { JobSinks } from "./sink.ts";

const exists = (path: string) => Deno.stat(path).then(() => true, () => false);

async function write(sinks: JobSinks, path: string, run: RunRecord, text: string) {
  const sink = await sinks.add(openFileSink(path, run));
  const writer = sink.writable.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  return sink;
}

Deno.test("file sink: .partial until the job commits, then renamed; discard removes either", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-sinks-" });
  try {
    const run = await RunRecord.begin(join(dir, "state"));
    const accepted = new JobSinks();
    const a = join(dir, "a.dbit");
    equal((await write(accepted, a, run, "stream a")).path, a);
    ok(await exists(`${a}.partial`) && !await exists(a), "a closed stream is not accepted yet");
    await accepted.commit();
    equal(await Deno.readTextFile(a), "stream a");
    ok(!await exists(`${a}.partial`));

    // A job that fails before its commit, and one whose checkpoint commit fails after it.
    for (const commitFirst of [false, true]) {
      const failed = new JobSinks();
      const b = join(dir, "b.dbit");
      await write(failed, b, run, "stream b");
      if (commitFirst) await failed.commit();
      await failed.discard();
      ok(!await exists(b) && !await exists(`${b}.partial`), "a failed job leaves no stream");
    }
    ok(await exists(a), "another job's stream stays");
    await run.end();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
