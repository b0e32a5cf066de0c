import assert from "node:assert/strict";
import { receiverStatus, senderStatus, toPrometheus, toText } from "./status.ts";

Deno.test("status rows give lag, traffic and errors, as text and Prometheus metrics", () => {
  const rows = senderStatus([{
    name: "vda",
    node: "disk0",
    dr: "127.0.0.1:10900",
    seedId: "s",
    confirmedCycle: 4,
    confirmedAt: "2024-01-01T00:00:00.000Z",
    totals: { cycles: 4, dirtyBytes: 1000, payloadBytes: 300, wireBytes: 320 },
    errors: 1,
    lastError: "cannot reach",
  }], new Date("2024-01-01T00:01:30.000Z"));
  assert.equal(rows[0].lagSeconds, 90);
  const prom = toPrometheus(rows);
  assert.match(prom, /^dirtybit_replication_lag_seconds\{disk="vda"\} 90$/m);
  assert.match(prom, /^# TYPE dirtybit_replication_wire_bytes_total counter$/m);
  assert.doesNotMatch(prom, /seed_offset_bytes\{/);
  assert.equal(
    toText(rows),
    "vda: cycle 4, lag 90 s, 320 bytes sent for 1000 dirty, 1 errors (last: cannot reach)\n",
  );
});

Deno.test("a disk whose seed is not confirmed is seeding, in every output", () => {
  const rows = senderStatus([{
    name: "vdb",
    node: "disk1",
    dr: "127.0.0.1:10900",
    totals: { cycles: 0, dirtyBytes: 0, payloadBytes: 0, wireBytes: 0 },
    errors: 0,
  }], new Date());
  assert.equal(rows[0].phase, "seeding");
  assert.equal(rows[0].confirmedCycle, null);
  assert.equal(toText(rows), "vdb: seeding\n");
  assert.equal(
    receiverStatus([{ type: "state", name: "vdb", seedOffset: 4096 }], new Date())[0].phase,
    "seeding",
  );
  assert.equal(
    receiverStatus([{ type: "state", name: "vdb", cycle: 0 }], new Date())[0].phase,
    "replicating",
  );
});

Deno.test("status names a role that stops cycles", () => {
  const promoted = receiverStatus([{
    type: "state",
    name: "vda",
    cycle: 3,
    role: { role: "primary/promoted", since: "2024-01-01T00:00:00.000Z", unfenced: true },
  }], new Date());
  assert.equal(promoted[0].role, "primary/promoted");
  assert.equal(toText(promoted), "vda (primary/promoted): cycle 3\n");
  assert.equal(
    receiverStatus([{ type: "state", name: "vda", cycle: 3 }], new Date())[0].role,
    "replica/replicating",
  );
});

Deno.test("receiver rows: confirmed when applied there, the traffic it received, its errors", () => {
  const [row] = receiverStatus([{
    type: "state",
    name: "vda",
    cycle: 5,
    stats: {
      appliedAt: "2024-01-01T00:00:00.000Z",
      cycles: 5,
      dirtyBytes: 1000,
      payloadBytes: 300,
      wireBytes: 320,
      errors: 1,
      lastError: "batch ended early",
    },
  }], new Date("2024-01-01T00:00:30.000Z"));
  assert.equal(row.confirmedAt, "2024-01-01T00:00:00.000Z");
  assert.equal(row.lagSeconds, 30);
  assert.deepStrictEqual(
    [row.cycles, row.dirtyBytes, row.payloadBytes, row.wireBytes, row.errors, row.lastError],
    [5, 1000, 300, 320, 1, "batch ended early"],
  );
  // A receiver of an older version sends no stats.
  const [old] = receiverStatus([{ type: "state", name: "vda", cycle: 5 }], new Date());
  assert.equal(old.confirmedAt, null);
  assert.equal(old.lagSeconds, null);
});
