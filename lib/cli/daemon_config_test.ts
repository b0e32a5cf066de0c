import assert from "node:assert/strict";
import { UsageError } from "../core/errors.ts";
import { parseDaemonConfig } from "./daemon_config.ts";

const good = {
  defaults: { dr_host: "dr.example.net", psk_file: "/etc/psk", cycle_interval: 300 },
  disks: [
    { name: "vm1-vda", qmp: "/run/vm1.qmp", node: "n1" },
    { name: "vm2-vda", qmp: "/run/vm2.qmp", node: "n2", cycle_interval: 60, dr_port: 11000 },
  ],
};

Deno.test("daemon config: defaults merge into every disk, disks override", () => {
  const disks = parseDaemonConfig(JSON.stringify(good), "f.json");
  assert.equal(disks.length, 2);
  assert.equal(disks[0].params.cycle_interval, 300);
  assert.equal(disks[0].params.dr_port, 10900);
  assert.equal(disks[1].params.cycle_interval, 60);
  assert.equal(disks[1].params.dr_port, 11000);
  assert.deepStrictEqual(disks[1].params.node, ["n2"]);
});

Deno.test("daemon config: errors name the file and the key", () => {
  const cases: [unknown, RegExp][] = [
    ["{", /config f\.json: not valid JSON/],
    [{ disks: [] }, /config f\.json: disks: must be a non-empty list/],
    [{ disk: [] }, /config f\.json: disk: unknown key/],
    [{ ...good, defaults: { color: 1 } }, /defaults\.color: unknown key/],
    [
      { ...good, disks: [{ ...good.disks[0], cycle_interval: "soon" }] },
      /disks\[0\] \(vm1-vda\): parameter cycle_interval='soon'/,
    ],
    [{ ...good, disks: [{ qmp: "/q", node: "n" }] }, /disks\[0\]\.name: is required/],
    [
      { ...good, disks: [good.disks[0], good.disks[0]] },
      /disks\[1\]\.name: 'vm1-vda' appears twice/,
    ],
    [{ disks: [good.disks[0]] }, /disks\[0\] \(vm1-vda\)\.dr_host: is required/],
    [{ ...good, disks: [{ name: "x", qmp: "/q" }] }, /disks\[0\] \(x\)\.node: is required/],
    [{ ...good, disks: [{ ...good.disks[0], bandwidth_limit: "fast" }] }, /bandwidth_limit='fast'/],
    [
      { ...good, disks: [{ ...good.disks[0], name: "../x" }] },
      /disks\[0\]\.name: '\.\.\/x' must be/,
    ],
  ];
  for (const [doc, message] of cases) {
    const text = typeof doc === "string" ? doc : JSON.stringify(doc);
    assert.throws(() => parseDaemonConfig(text, "f.json"), (err: Error) => {
      assert.ok(err instanceof UsageError, String(err));
      assert.match(err.message, message);
      return true;
    });
  }
});

Deno.test("daemon config: relative paths are taken from the file's directory", () => {
  const doc = {
    defaults: { dr_host: "dr", psk_file: "keys/psk", state_dir: "state", work_dir: "../work" },
    disks: [
      { name: "vda", qmp: "run/vm.qmp", node: "n1", nbd_socket: "nbd.sock" },
      { name: "vdb", qmp: "/run/vm2.qmp", node: "n2", state_dir: "/var/lib/dirtybit" },
    ],
  };
  const [a, b] = parseDaemonConfig(JSON.stringify(doc), "/etc/dirtybit/replicate.json");
  assert.equal(a.params.psk_file, "/etc/dirtybit/keys/psk");
  assert.equal(a.params.state_dir, "/etc/dirtybit/state");
  assert.equal(a.params.qmp, "/etc/dirtybit/run/vm.qmp");
  assert.equal(a.params.nbd_socket, "/etc/dirtybit/nbd.sock");
  assert.equal(a.workDir, "/etc/work");
  assert.equal(b.params.qmp, "/run/vm2.qmp");
  assert.equal(b.params.state_dir, "/var/lib/dirtybit");
  // A file named without a directory: its directory is the current one.
  const [c] = parseDaemonConfig(JSON.stringify(doc), "replicate.json");
  assert.equal(c.params.state_dir, `${Deno.cwd()}/state`);
  // Names and hosts are no paths.
  assert.equal(a.name, "vda");
  assert.equal(a.params.dr_host, "dr");
});
