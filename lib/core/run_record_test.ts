import assert from "node:assert/strict";
import { join } from "node:path";
import { RunRecord } from "./run_record.ts";
import { selfStamp } from "./process.ts";

async function names(dir: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
}

Deno.test("the next run removes what a dead run recorded, and nothing of a live one", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-run-record-test-" });
  try {
    const runs = join(dir, ".runs");
    await Deno.mkdir(runs);
    const me = await selfStamp();
    const dead = { ...me, start: me.start + 1 }; // this pid, another process: gone
    const paths = ["dead.partial", "dead-dir", "live.partial", "unrecorded.partial"]
      .map((n) => join(dir, n));
    for (const p of paths) await Deno.writeTextFile(p, "x");
    const server = { kind: "nbd-server", qmp: "/q.sock", marker: "dirtybit-nbd-1-a" };
    const record = (owner: typeof me, items: unknown[]) => JSON.stringify({ owner, items });
    await Deno.writeTextFile(
      join(runs, "1-1-dead.json"),
      record(dead, [{ kind: "path", path: paths[0] }, { kind: "path", path: paths[1] }, server]),
    );
    await Deno.writeTextFile(
      join(runs, "1-2-live.json"),
      record(me, [{ kind: "path", path: paths[2] }]),
    );
    await Deno.writeTextFile(join(runs, `${dead.pid}-${dead.start}-ab.json.tmp-12345678`), "{");

    const run = await RunRecord.begin(dir);
    assert.deepEqual(await names(dir), [".runs", "live.partial", "unrecorded.partial"]);
    assert.deepEqual(run.leftovers("nbd-server"), [server]);
    assert.deepEqual(await names(runs), ["1-1-dead.json", "1-2-live.json"]);
    await run.settle(run.leftovers("nbd-server")[0]);
    assert.deepEqual(run.leftovers("nbd-server"), []);
    assert.deepEqual(await names(runs), ["1-2-live.json"], "a settled dead record is removed");

    // This run's own record: written on add, removed by end with what it names.
    const mine = join(dir, "mine.partial");
    await run.add({ kind: "path", path: mine });
    await Deno.writeTextFile(mine, "x");
    assert.equal((await names(runs)).length, 2);
    await run.end();
    assert.deepEqual(await names(runs), ["1-2-live.json"]);
    assert.ok(!(await Deno.stat(mine).then(() => true, () => false)));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("items added at once (the disks of one job) are all in the record", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-run-record-test-" });
  try {
    const run = await RunRecord.begin(dir);
    const paths = Array.from({ length: 16 }, (_, i) => join(dir, `disk${i}.partial`));
    await Promise.all(paths.map((path) => run.add({ kind: "path", path })));
    const [file] = await names(join(dir, ".runs"));
    const record = JSON.parse(await Deno.readTextFile(join(dir, ".runs", file)));
    assert.deepEqual(record.items.map((i: { path: string }) => i.path).sort(), paths.sort());
    await run.end();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
