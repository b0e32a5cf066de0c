import assert from "node:assert/strict";
import { ChainError } from "../core/errors.ts";
import { checkChainOrder } from "./chain.ts";
import { completeHeader, type StreamHeader, type StreamHeaderInit } from "./format.ts";

const base: StreamHeaderInit = {
  disk: "vda",
  virtualSize: 1 << 30,
  blockSize: 65536,
  level: "full",
  backupId: "F",
  parentId: null,
  chainId: "C",
  checkpoint: "cp-F",
  compression: "none",
};
const h = (over: Partial<StreamHeaderInit>): StreamHeader => completeHeader({ ...base, ...over });
const full = h({});
const inc1 = h({ level: "incremental", backupId: "I1", parentId: "F" });
const inc2 = h({ level: "incremental", backupId: "I2", parentId: "I1" });
const diff = h({ level: "differential", backupId: "D1", parentId: "F" });

Deno.test("a full, then incrementals in order, or a differential on its full", () => {
  checkChainOrder(null, full);
  checkChainOrder(full, inc1);
  checkChainOrder(inc1, inc2);
  checkChainOrder(full, diff);
  checkChainOrder(diff, h({ level: "incremental", backupId: "I3", parentId: "D1" }));
});

Deno.test("chain violations are ChainErrors with a clear message", () => {
  const cases: [StreamHeader | null, StreamHeader, RegExp][] = [
    [null, inc1, /cannot start a restore: give its full backup first/],
    [inc1, full, /starts a new chain/],
    [full, inc2, /based on 'I1', but the last stream applied is full backup 'F'/],
    [inc2, inc1, /based on 'F'/],
    [inc1, diff, /applies only directly on its full/],
    [full, h({ level: "incremental", backupId: "X", parentId: "F", disk: "vdb" }), /disk 'vdb'/],
    [full, h({ level: "incremental", backupId: "X", parentId: "F", chainId: "C2" }), /chain 'C2'/],
    [
      full,
      h({ level: "incremental", backupId: "X", parentId: "F", virtualSize: 2 ** 31 }),
      /resized/,
    ],
  ];
  for (const [prev, next, message] of cases) {
    assert.throws(() => checkChainOrder(prev, next), (err: Error) => {
      assert.ok(err instanceof ChainError, String(err));
      assert.match(err.message, message);
      assert.ok(!err.message.includes("\n"));
      return true;
    });
  }
});
