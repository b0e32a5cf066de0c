import assert from "node:assert/strict";
import { RoleError, UsageError } from "../core/errors.ts";
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

Deno.test("roles: unplanned failover, the returning source fences itself, then fails back", () => {
  let a = initialRole("vda", "primary");
  let b = initialRole("vda", "replica");
  // A is lost: B promotes without a source_fenced record.
  b = applyStep(b, "failover_exec", { seedId: "s1", cycle: 5, unfenced: true });
  assert.equal(b.unfenced, true);
  // A returns: its first contact fences it; it sends no cycles and no reprotect undoes it.
  a = applyStep(a, "fence", { seedId: "s1", cycle: 4, image: "/a.qcow2" });
  assert.equal(`${a.role}/${a.state}`, "primary/fenced");
  assert.throws(() => checkStep(a, "cycle"), (err: Error) => {
    assert.ok(err instanceof RoleError);
    assert.match(err.message, /since fence at .*run 'dirtybit failback pre' there/);
    return true;
  });
  a = applyStep(a, "resync");
  a = { ...a, state: "replicating" };
  // A resync whose confirmation the sender lost is taken again.
  checkStep(a, "resync");
  b = applyStep(b, "failback_pre", { seedId: "s2", cycle: 0 });
  assert.equal(`${b.role}/${b.state}`, "primary/replicating");
});

Deno.test("roles: failover pre records at the DR site that the source is fenced", () => {
  const b = applyStep(initialRole("vda", "replica"), "source_fenced", { seedId: "s1", cycle: 7 });
  assert.equal(`${b.role}/${b.state}`, "replica/replicating");
  assert.equal(b.step, "source_fenced");
  checkStep(b, "failover_exec");
  assert.throws(() => checkStep(applyStep(b, "failover_exec"), "source_fenced"), RoleError);
});
