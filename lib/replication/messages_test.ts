import assert from "node:assert/strict";
import { InputError } from "../core/errors.ts";
import { decodeMessage, encodeMessage, type Message } from "./messages.ts";

Deno.test("every message kind round-trips", () => {
  const msgs: Message[] = [
    { type: "auth", proof: new Uint8Array(32).fill(3) },
    { type: "open", name: "vm-1.vda", size: 1 << 30 },
    { type: "state", name: "d", seedId: "s", size: 10, cycle: 4 },
    { type: "begin", kind: "seed", seedId: "s", size: 10, cycle: 0, base: 0, seedEnd: 8 },
    { type: "data", offset: 2 ** 40, length: 3, codec: "raw", payload: new Uint8Array([1, 2, 3]) },
    { type: "zero", offset: 4096, length: 2 ** 33 },
    { type: "end", records: 2, bytes: 5 },
    { type: "confirm", seedId: "s", cycle: 5 },
    { type: "error", message: "no" },
    { type: "status-request" },
    { type: "status", replicas: [{ type: "state", name: "d" }] },
    {
      type: "status",
      replicas: [{
        type: "state",
        name: "d",
        cycle: 2,
        stats: {
          appliedAt: "2024-01-01T00:00:00.000Z",
          cycles: 2,
          dirtyBytes: 10,
          payloadBytes: 4,
          wireBytes: 90,
          errors: 1,
          lastError: "cut off",
        },
      }],
    },
    { type: "hashes-request", name: "d", blockSize: 65536 },
    { type: "hashes", first: 7, hashes: new BigUint64Array([1n, 2n ** 64n - 1n]) },
    { type: "promote", name: "d", seedId: "s", cycle: 3 },
    { type: "reprotect", name: "d", seedId: "s", cycle: 3 },
    { type: "role-done", name: "d", role: "primary/promoted" },
    { type: "fenced", name: "d", seedId: "s", cycle: 3 },
    { type: "kept", name: "d", path: "/a/d.divergent.qcow2", bytes: 65536, whole: false },
    { type: "kept", name: "d", bytes: 0, whole: false },
    {
      type: "kept",
      name: "d",
      path: "/a/p",
      bytes: 3,
      whole: false,
      cycle: 2,
      extents: [[0, 1], [2 ** 40, 2]],
    },
    {
      type: "state",
      name: "d",
      seedId: "s",
      cycle: 4,
      role: {
        role: "primary/promoted",
        step: "failover_exec",
        since: "2026-01-01T00:00:00.000Z",
        cycle: 4,
        unfenced: true,
      },
    },
    { type: "begin", kind: "resync", seedId: "s", size: 10, cycle: 0, base: 0 },
    { type: "close" },
  ];
  for (const m of msgs) assert.deepStrictEqual(decodeMessage(encodeMessage(m)), m);
});

Deno.test("malformed messages are InputErrors", () => {
  const bad = [
    new Uint8Array([0x7f]),
    new Uint8Array([0x10, 0x7b]),
    encodeMessage({ type: "open", name: "../etc", size: 1 }),
    encodeMessage({ type: "open", name: ".hidden", size: 1 }),
    new TextEncoder().encode('\x10{"name":"a","size":-1}'),
    encodeMessage({ type: "zero", offset: 0, length: 0 }),
    encodeMessage({ type: "data", offset: 0, length: 5, codec: "raw", payload: new Uint8Array(3) }),
  ];
  for (const b of bad) assert.throws(() => decodeMessage(b), InputError);
});
