/**
 * Integration tests of the QEMU layer against a real qemu-storage-daemon:
 * QMP client, point-in-time views and the bitmap lifecycle. Data and dirty
 * maps are read with qemu-img and nbdinfo as oracles.
 */
import assert from "node:assert/strict";
import { Qsd, withQsd } from "./fixtures/qsd.ts";
import { assertRejects, run } from "./helpers.ts";
import { QmpError, QmpSocket } from "../lib/qemu/qmp.ts";
import { SourceError } from "../lib/core/errors.ts";
import type { BackupLevel } from "../lib/core/level.ts";
import {
  type DiskCheckpoint,
  listDirtybitBitmaps,
  openPointInTime,
  type PointInTime,
  removeCheckpoint,
  removeLeftovers,
} from "../lib/qemu/mod.ts";

const MiB = 1 << 20;
const KiB = 1 << 10;
const SIZE = 64 * MiB;

interface Range {
  offset: number;
  length: number;
}

/** Dirty ranges of an export's bitmap context, from nbdinfo. */
async function dirtyMap(uri: string, context: string): Promise<Range[]> {
  const out = await run("nbdinfo", ["--json", `--map=${context}`, uri]);
  const entries = JSON.parse(out) as { offset: number; length: number; type: number }[];
  return entries.filter((e) => (e.type & 1) === 1).map((e) => ({
    offset: e.offset,
    length: e.length,
  }));
}

/** Reads a whole export to a raw file. */
async function readExport(uri: string, path: string): Promise<void> {
  await run("qemu-img", ["convert", "-f", "raw", "-O", "raw", uri, path]);
}

async function sameBytes(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([Deno.readFile(a), Deno.readFile(b)]);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

/** Same bytes in `ranges` of two raw files. */
async function sameRanges(a: string, b: string, ranges: Range[]): Promise<boolean> {
  const [x, y] = await Promise.all([Deno.readFile(a), Deno.readFile(b)]);
  return ranges.every((r) =>
    x.subarray(r.offset, r.offset + r.length).every((v, i) => v === y[r.offset + i])
  );
}

/** Nothing of a point in time is left in QEMU or in the work directory. */
async function assertClean(qmp: QmpSocket, qsd: Qsd, workDir: string): Promise<void> {
  const exports = await qmp.execute<{ id: string }[]>("query-block-exports");
  assert.deepEqual(
    exports.map((e) => e.id).filter((id) => !id.startsWith("vm")),
    [],
    "exports left",
  );
  assert.deepEqual(await qmp.execute("query-block-jobs"), [], "block jobs left");
  assert.deepEqual(await qmp.execute("query-jobs"), [], "jobs left");
  const nodes = await qmp.execute<{ "node-name": string }[]>("query-named-block-nodes", {
    flat: true,
  });
  assert.deepEqual(
    nodes.map((n) => n["node-name"]).filter((n) => n.startsWith("dirtybit")),
    [],
    "temporary nodes left",
  );
  for (const disk of qsd.disks) {
    const tmp = (await listDirtybitBitmaps(qmp, disk.node)).filter((b) => b.name.includes("-tmp-"));
    assert.deepEqual(tmp, [], "temporary bitmaps left");
  }
  const files = [];
  for await (const entry of Deno.readDir(workDir)) files.push(entry.name);
  assert.deepEqual(files.filter((f) => f.endsWith(".qcow2")), [], "overlay files left");
}

/** A QSD with `disks` 64 MiB disks, a QMP client and a work dir, cleaned up after `fn`. */
function withQmp(
  disks: number,
  fn: (
    ctx: { qsd: Qsd; qmp: () => QmpSocket; reconnect: () => Promise<void>; dir: string },
  ) => Promise<void>,
  guestNbd = true,
): Promise<void> {
  const spec = Array.from({ length: disks }, (_, i) => ({
    size: SIZE,
    writes: [{ pattern: 0x11 + i, offset: 0, length: 4 * MiB }],
  }));
  return withQsd({ disks: spec, guestNbd }, async ({ qsd, dir }) => {
    let qmp = await qsd.qmp();
    try {
      await fn({
        qsd,
        qmp: () => qmp,
        reconnect: async () => {
          await qmp.close();
          qmp = await qsd.qmp();
        },
        dir,
      });
    } finally {
      await qmp.close();
    }
  });
}

function open(
  qmp: QmpSocket,
  qsd: Qsd,
  dir: string,
  level: BackupLevel,
  checkpointId: string,
  checkpoints: (DiskCheckpoint | undefined)[] = [],
): Promise<PointInTime> {
  return openPointInTime(qmp, {
    disks: qsd.disks.map((d, i) => ({ node: d.node, checkpoint: checkpoints[i] })),
    level,
    checkpointId,
    workDir: dir,
    nbdSocket: qsd.nbdSocket,
  });
}

Deno.test("qmp: errors carry QEMU's class, events are buffered, connect failure is clear", async () => {
  await withQmp(1, async ({ qsd, qmp, dir }) => {
    const err = await assertRejects(
      () => qmp().execute("blockdev-del", { "node-name": "nope" }),
      QmpError,
    );
    assert.equal(err.qmpClass, "GenericError");
    assert.match(err.desc, /nope/);
    assert.ok(err instanceof SourceError);

    // The fleecing job's end is only polled for; its event waits in the buffer.
    await (await open(qmp(), qsd, dir, "full", "c1")).abort();
    const cancelled = qmp().events("BLOCK_JOB_CANCELLED");
    assert.equal(cancelled.length, 1);
    const event = await qmp().waitForEvent("BLOCK_JOB_CANCELLED", () => true, 100);
    assert.deepEqual(event.data, cancelled[0].data);
    assert.equal(qmp().events("BLOCK_JOB_CANCELLED").length, 0);
    await assertRejects(() => qmp().waitForEvent("NO_SUCH_EVENT", () => true, 50), SourceError);
  });
  const err = await assertRejects(() => QmpSocket.connect("/nonexistent/qmp.sock"), SourceError);
  assert.match(err.message, /\/nonexistent\/qmp\.sock/);
});

Deno.test("qmp: a silent peer times out instead of hanging", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/silent.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  const accepted: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) accepted.push(conn);
  })();
  try {
    const err = await assertRejects(
      () => QmpSocket.connect(path, { connectTimeoutMs: 200 }),
      SourceError,
    );
    assert.match(err.message, /no QMP greeting/);
  } finally {
    listener.close();
    await accepting.catch(() => undefined);
    for (const c of accepted) c.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("full, then incremental: views are frozen, writes during land in the next bitmap", async () => {
  await withQmp(1, async ({ qsd, qmp, dir }) => {
    const before = `${dir}/before.raw`;
    const view = `${dir}/view.raw`;
    await qsd.snapshotImage(0, before);

    const full = await open(qmp(), qsd, dir, "full", "c1");
    assert.deepEqual(full.disks[0].level, "full");
    assert.deepEqual(full.disks[0].reason, undefined);
    assert.deepEqual(full.disks[0].granularity, 64 * KiB);
    assert.deepEqual(full.disks[0].size, SIZE);
    await qsd.guestWrite(0, 0x22, 8 * MiB, MiB); // during: not in the view
    await readExport(full.disks[0].uri, view);
    assert.ok(await sameBytes(before, view), "full view changed by a guest write");
    const [cp1] = await full.commit();
    assert.deepEqual(cp1, {
      node: "disk0",
      incBitmap: "dirtybit-inc-c1",
      baseBitmap: "dirtybit-base-c1",
    });
    await assertClean(qmp(), qsd, dir);

    await qsd.guestWrite(0, 0x33, 16 * MiB, 64 * KiB);
    await qsd.snapshotImage(0, before);
    const inc = await open(qmp(), qsd, dir, "incremental", "c2", [cp1]);
    const disk = inc.disks[0];
    assert.deepEqual(disk.level, "incremental");
    assert.deepEqual(disk.dirtyContext, "qemu:dirty-bitmap:dirtybit-tmp-c2");
    await qsd.guestWrite(0, 0x44, 32 * MiB, MiB); // during
    const dirty = await dirtyMap(disk.uri, disk.dirtyContext!);
    assert.deepEqual(dirty, [{ offset: 8 * MiB, length: MiB }, {
      offset: 16 * MiB,
      length: 64 * KiB,
    }]);
    await readExport(disk.uri, view);
    assert.ok(await sameBytes(before, view), "incremental view changed by a guest write");
    const [cp2] = await inc.commit();
    assert.deepEqual(cp2, {
      node: "disk0",
      incBitmap: "dirtybit-inc-c2",
      baseBitmap: "dirtybit-base-c1",
    });
    await assertClean(qmp(), qsd, dir);
    assert.deepEqual(
      (await listDirtybitBitmaps(qmp(), "disk0")).map((b) => b.name).sort(),
      ["dirtybit-base-c1", "dirtybit-inc-c2"],
    );

    const next = await open(qmp(), qsd, dir, "incremental", "c3", [cp2]);
    assert.deepEqual(await dirtyMap(next.disks[0].uri, next.disks[0].dirtyContext!), [
      { offset: 32 * MiB, length: MiB },
    ]);
    await next.abort();
    await assertClean(qmp(), qsd, dir);
  });
});

Deno.test("differential: changes since the full; the next incremental follows it", async () => {
  await withQmp(1, async ({ qsd, qmp, dir }) => {
    const [cp1] = await (await open(qmp(), qsd, dir, "full", "c1")).commit();
    await qsd.guestWrite(0, 0x22, 8 * MiB, MiB);
    const [cp2] = await (await open(qmp(), qsd, dir, "incremental", "c2", [cp1])).commit();
    await qsd.guestWrite(0, 0x33, 20 * MiB, MiB);

    const diff = await open(qmp(), qsd, dir, "differential", "c3", [cp2]);
    assert.deepEqual(diff.disks[0].level, "differential");
    assert.deepEqual(await dirtyMap(diff.disks[0].uri, diff.disks[0].dirtyContext!), [
      { offset: 8 * MiB, length: MiB },
      { offset: 20 * MiB, length: MiB },
    ]);
    const [cp3] = await diff.commit();
    assert.deepEqual(cp3, {
      node: "disk0",
      incBitmap: "dirtybit-inc-c3",
      baseBitmap: "dirtybit-base-c1",
    });

    await qsd.guestWrite(0, 0x44, 40 * MiB, MiB);
    const inc = await open(qmp(), qsd, dir, "incremental", "c4", [cp3]);
    assert.deepEqual(await dirtyMap(inc.disks[0].uri, inc.disks[0].dirtyContext!), [
      { offset: 40 * MiB, length: MiB },
    ]);
    await inc.commit();
    const diff2 = await open(qmp(), qsd, dir, "differential", "c5", [cp3]);
    assert.deepEqual(await dirtyMap(diff2.disks[0].uri, diff2.disks[0].dirtyContext!), [
      { offset: 8 * MiB, length: MiB },
      { offset: 20 * MiB, length: MiB },
      { offset: 40 * MiB, length: MiB },
    ]);
    await diff2.abort();
    await assertClean(qmp(), qsd, dir);
  });
});

Deno.test("abort keeps every change for the next incremental and removes what it added", async () => {
  await withQmp(1, async ({ qsd, qmp, dir }) => {
    const [cp1] = await (await open(qmp(), qsd, dir, "full", "c1")).commit();
    await qsd.guestWrite(0, 0x22, 8 * MiB, MiB);
    const failed = await open(qmp(), qsd, dir, "incremental", "c2", [cp1]);
    await qsd.guestWrite(0, 0x33, 24 * MiB, MiB); // during the failed attempt
    await failed.abort();
    await failed.abort(); // a second abort is a no-op
    await assertClean(qmp(), qsd, dir);
    assert.deepEqual(
      (await listDirtybitBitmaps(qmp(), "disk0")).map((b) => b.name).sort(),
      ["dirtybit-base-c1", "dirtybit-inc-c1"],
    );

    const retry = await open(qmp(), qsd, dir, "incremental", "c3", [cp1]);
    assert.deepEqual(await dirtyMap(retry.disks[0].uri, retry.disks[0].dirtyContext!), [
      { offset: 8 * MiB, length: MiB },
      { offset: 24 * MiB, length: MiB },
    ]);
    await retry.commit();
    await assertClean(qmp(), qsd, dir);
  });
});

Deno.test("missing or no checkpoint bitmap gives a full with the reason", async () => {
  await withQmp(1, async ({ qsd, qmp, dir }) => {
    const first = await open(qmp(), qsd, dir, "incremental", "c1");
    assert.deepEqual(first.disks[0].level, "full");
    assert.match(first.disks[0].reason!, /no previous checkpoint for node disk0/);
    assert.deepEqual(first.disks[0].dirtyContext, undefined);
    const [cp1] = await first.commit();

    assert.deepEqual(await removeCheckpoint(qmp(), cp1), ["dirtybit-inc-c1", "dirtybit-base-c1"]);
    const pit = await open(qmp(), qsd, dir, "incremental", "c2", [cp1]);
    assert.deepEqual(pit.disks[0].level, "full");
    assert.match(pit.disks[0].reason!, /bitmap dirtybit-inc-c1 does not exist on node disk0/);
    const [cp2] = await pit.commit();
    assert.deepEqual(cp2.baseBitmap, "dirtybit-base-c2");
    await assertClean(qmp(), qsd, dir);
  });
});

Deno.test("bitmaps survive a clean restart; after a kill they are inconsistent -> full", async () => {
  await withQmp(1, async ({ qsd, qmp, reconnect, dir }) => {
    const [cp1] = await (await open(qmp(), qsd, dir, "full", "c1")).commit();
    await qsd.guestWrite(0, 0x22, 8 * MiB, MiB);
    await qmp().close();
    await qsd.restart();
    await reconnect();
    const inc = await open(qmp(), qsd, dir, "incremental", "c2", [cp1]);
    assert.deepEqual(inc.disks[0].level, "incremental");
    assert.deepEqual(await dirtyMap(inc.disks[0].uri, inc.disks[0].dirtyContext!), [
      { offset: 8 * MiB, length: MiB },
    ]);
    const [cp2] = await inc.commit();

    await qmp().close();
    await qsd.restart(); // stores dirtybit-inc-c2 in the image
    await qsd.kill();
    await qsd.restart();
    await reconnect();
    const after = await open(qmp(), qsd, dir, "incremental", "c3", [cp2]);
    assert.deepEqual(after.disks[0].level, "full");
    assert.deepEqual(
      after.disks[0].reason,
      "bitmap dirtybit-inc-c2 is inconsistent (QEMU was not shut down cleanly)",
    );
    assert.deepEqual(
      (await listDirtybitBitmaps(qmp(), "disk0")).map((b) => b.name).sort(),
      ["dirtybit-base-c3", "dirtybit-inc-c3"],
    );
    await after.commit();
    await assertClean(qmp(), qsd, dir);
  });
});

Deno.test("two disks share one point in time", async () => {
  await withQmp(2, async ({ qsd, qmp, dir }) => {
    const pit = await open(qmp(), qsd, dir, "full", "c1");
    assert.deepEqual(pit.disks.map((d) => d.node), ["disk0", "disk1"]);
    const cps = await pit.commit();
    await qsd.guestWrite(0, 0x22, 8 * MiB, MiB);
    await qsd.guestWrite(1, 0x33, 12 * MiB, 2 * MiB);
    const before = [`${dir}/b0.raw`, `${dir}/b1.raw`];
    await qsd.snapshotImage(0, before[0]);
    await qsd.snapshotImage(1, before[1]);

    const inc = await open(qmp(), qsd, dir, "incremental", "c2", cps);
    await qsd.guestWrite(0, 0x44, 30 * MiB, MiB);
    await qsd.guestWriteZeroes(1, 0, 4 * MiB);
    assert.deepEqual(await dirtyMap(inc.disks[0].uri, inc.disks[0].dirtyContext!), [
      { offset: 8 * MiB, length: MiB },
    ]);
    assert.deepEqual(await dirtyMap(inc.disks[1].uri, inc.disks[1].dirtyContext!), [
      { offset: 12 * MiB, length: 2 * MiB },
    ]);
    for (const i of [0, 1]) {
      await readExport(inc.disks[i].uri, `${dir}/v${i}.raw`);
      assert.ok(await sameBytes(before[i], `${dir}/v${i}.raw`), `disk ${i} view changed`);
    }
    const next = await inc.commit();
    const after = await open(qmp(), qsd, dir, "incremental", "c3", next);
    assert.deepEqual(await dirtyMap(after.disks[1].uri, after.disks[1].dirtyContext!), [
      { offset: 0, length: 4 * MiB },
    ]);
    await readExport(after.disks[1].uri, `${dir}/v1.raw`);
    assert.ok(!await sameRanges(before[1], `${dir}/v1.raw`, [{ offset: 0, length: 4 * MiB }]));
    await after.abort();
    await assertClean(qmp(), qsd, dir);
  });
});

Deno.test("open starts its own NBD server and rolls back a failed open", async () => {
  await withQmp(1, async ({ qsd, qmp, dir }) => {
    const pit = await openPointInTime(qmp(), {
      disks: [{ node: "disk0" }],
      level: "full",
      checkpointId: "c1",
      workDir: dir,
    });
    assert.match(pit.disks[0].uri, new RegExp(`socket=${dir}/dirtybit-nbd.sock$`));
    await readExport(pit.disks[0].uri, `${dir}/view.raw`);
    const view = await Deno.readFile(`${dir}/view.raw`);
    assert.deepEqual(view[0], 0x11);
    assert.deepEqual(view.length, SIZE);
    const [cp1] = await pit.commit();
    await assertClean(qmp(), qsd, dir);
    // the server was stopped: it can be started again elsewhere
    await qmp().execute("nbd-server-start", {
      addr: { type: "unix", data: { path: `${dir}/probe.sock` } },
    });
    await qmp().execute("nbd-server-stop");

    await assertRejects(
      () =>
        openPointInTime(qmp(), {
          disks: [{ node: "disk0", checkpoint: cp1 }],
          level: "incremental",
          checkpointId: "c2",
          workDir: dir,
          nbdSocket: `${dir}/no/such/dir/nbd.sock`,
        }),
      SourceError,
    );
    await assertClean(qmp(), qsd, dir);
    assert.deepEqual(
      (await listDirtybitBitmaps(qmp(), "disk0")).map((b) => b.name).sort(),
      ["dirtybit-base-c1", "dirtybit-inc-c1"],
    );
    await assertRejects(
      () =>
        openPointInTime(qmp(), {
          disks: [{ node: "nope" }],
          level: "full",
          checkpointId: "c3",
          workDir: dir,
        }),
      SourceError,
      "block node nope not found",
    );
  }, false);
});

Deno.test("leftovers of an attempt that died are removed; its changes are kept", async () => {
  await withQmp(1, async ({ qsd, qmp, reconnect, dir }) => {
    const [cp1] = await (await open(qmp(), qsd, dir, "full", "c1")).commit();
    await qsd.guestWrite(0, 0x22, 8 * MiB, MiB);
    await open(qmp(), qsd, dir, "incremental", "c2", [cp1]); // the process "dies" here
    await qsd.guestWrite(0, 0x33, 24 * MiB, MiB);
    await reconnect();
    await assertRejects(
      () => open(qmp(), qsd, dir, "incremental", "c3", [cp1]),
      SourceError,
      "dirtybit-tmp-c2 on node disk0 is busy",
    );
    const removed = await removeLeftovers(qmp());
    assert.equal(removed.exports.length, 1);
    assert.equal(removed.jobs.length, 1);
    assert.equal(removed.nodes.length, 2);
    assert.equal(removed.files.length, 1);
    assert.deepEqual(removed.bitmaps, ["dirtybit-tmp-c2"]);
    await assertClean(qmp(), qsd, dir);

    const retry = await open(qmp(), qsd, dir, "incremental", "c3", [cp1]);
    assert.deepEqual(await dirtyMap(retry.disks[0].uri, retry.disks[0].dirtyContext!), [
      { offset: 8 * MiB, length: MiB },
      { offset: 24 * MiB, length: MiB },
    ]);
    const [cp3] = await retry.commit();
    assert.deepEqual(
      (await listDirtybitBitmaps(qmp(), "disk0")).map((b) => b.name).sort(),
      [cp3.baseBitmap, cp3.incBitmap],
    );
    await assertClean(qmp(), qsd, dir);
  });
});
