import assert from "node:assert/strict";
import { UsageError } from "../core/errors.ts";
import { applyStep, checkStep, type DiskRole, initialRole, type Step } from "./roles.ts";

Deno.test("roles: the full failover, failback, reprotect round trip", () => {
  let a = initialRole("vda", "primary");
  let b = initialRole("vda", "replica");
  checkStep(a, "cycle");
  checkStep(b, "receive");
  a = applyStep(a, "failover_pre", { seedId: "s1", cycle: 5 });
  assert.equal(`${a.role}/${a.state}`, "primary/fenced");
  b = applyStep(b, "failover_exec", { seedId: "s1", cycle: 5 });
  assert.equal(`${b.role}/${b.state}`, "primary/promoted");
  a = applyStep(a, "resync");
  b = applyStep(b, "failback_pre");
  assert.equal(`${a.role}/${a.state}`, "replica/resyncing");
  a = { ...a, state: "replicating" };
  checkStep(a, "receive");
  checkStep(b, "cycle");
  a = applyStep(a, "promote");
  b = applyStep(b, "failback_exec");
  assert.equal(`${a.role}/${a.state}`, "primary/promoted");
  assert.equal(`${b.role}/${b.state}`, "replica/fenced");
  a = applyStep(a, "reprotect");
  b = applyStep(b, "reprotect_target");
  checkStep(a, "cycle");
  checkStep(b, "receive");
});

Deno.test("roles: wrong steps are refused with the state, the step and a hint", () => {
  const fenced = applyStep(initialRole("vda", "primary"), "failover_pre");
  const refusals: [DiskRole, Step, RegExp][] = [
    [
      fenced,
      "cycle",
      /vda is primary\/fenced since failover pre at .*: replication cycles .* needs primary\/replicating \(run 'dirtybit failover exec'/,
    ],
    [
      initialRole("vda", "replica"),
      "failback_pre",
      /replica\/replicating: failback pre .* needs primary\/promoted or primary\/replicating/,
    ],
    [
      applyStep(initialRole("vda", "replica"), "failover_exec"),
      "failover_exec",
      /primary\/promoted .*: failover exec .* needs replica\/replicating/,
    ],
    [
      initialRole("vda", "primary"),
      "reprotect",
      /reprotect from this side needs primary\/fenced or primary\/promoted/,
    ],
    [
      initialRole("vda", "primary"),
      "failback_exec",
      /failback exec .* needs primary\/replicating after failback pre/,
    ],
  ];
  for (const [role, step, message] of refusals) {
    assert.throws(() => checkStep(role, step), (err: Error) => {
      assert.ok(err instanceof UsageError);
      assert.match(err.message, message);
      return true;
    });
  }
});
