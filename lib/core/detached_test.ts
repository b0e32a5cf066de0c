import assert from "node:assert/strict";
import { join } from "node:path";
import { ensureDetached } from "./detached.ts";
import { processInfo } from "./process.ts";
import { UsageError } from "./errors.ts";
import { delay } from "./async.ts";

const script = (word: string) => ["sh", "-c", `echo ${word}; sleep 60; echo done`];

Deno.test("a detached process is started once, outlives its starter's call, and is found again", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-detached-" });
  const base = join(dir, "procs", "sleeper");
  let pid = 0;
  try {
    const first = await ensureDetached({ base, argv: script("ready"), ready: /^ready$/m });
    pid = first.pid;
    assert.equal(first.already, false);
    const info = await processInfo(pid);
    assert.deepEqual(info?.argv, script("ready"));
    const stat = (await Deno.readTextFile(`/proc/${pid}/stat`)).split(") ")[1].split(" ");
    assert.equal(Number(stat[3]), pid, "in a session of its own");
    const again = await ensureDetached({ base, argv: script("ready"), ready: /^ready$/m });
    assert.deepEqual(again, { ...first, already: true });
    await assert.rejects(
      ensureDetached({ base, argv: script("other"), ready: /^other$/m }),
      (e: Error) =>
        e instanceof UsageError && /runs 'sh -c echo ready; sleep 60; echo done'/.test(e.message),
    );
    Deno.kill(-pid, "SIGTERM"); // its group: the sleep too
    for (let i = 0; i < 50 && (await processInfo(pid)); i++) await delay(100);
    // Its pid file now names a dead process: a new one is started.
    const fresh = await ensureDetached({ base, argv: script("ready"), ready: /^ready$/m });
    assert.equal(fresh.already, false);
    pid = fresh.pid;
    // A process that exits before it is ready is an error quoting its log.
    await assert.rejects(
      ensureDetached({
        base: join(dir, "broken"),
        argv: ["sh", "-c", "echo cannot listen >&2; exit 3"],
        ready: /listening/,
      }),
      /exited with code 3: cannot listen \(log .*broken\.log\)/,
    );
  } finally {
    if (pid) Deno.kill(-pid, "SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
});
