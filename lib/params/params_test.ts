import assert from "node:assert/strict";
import { join, resolve } from "node:path";
import { UsageError } from "../core/errors.ts";
import {
  describeParams,
  flagHelp,
  flagToParam,
  paramToFlag,
  parseParamEntries,
  parseParams,
} from "./params.ts";
import { pskModeProblem } from "../replication/psk.ts";

function usageError(text: string) {
  return (e: unknown) => e instanceof UsageError && e.message.includes(text);
}

const PSK = "0123456789abcdef0123456789abcdef";

Deno.test("defaults fill what is not given, values are typed", () => {
  const p = parseParams({ vm: "web01", ssh_port: "2222", quiesce: "false", disks: "a, b" });
  assert.equal(p.vm, "web01");
  assert.equal(p.ssh_port, 2222);
  assert.equal(p.quiesce, false);
  assert.deepEqual(p.disks, ["a", "b"]);
  assert.equal(p.nbd_access_mode, "ssh_tunnel");
  assert.equal(p.compress, "zstd:3");
  assert.equal(parseParams({ compress: "zstd" }).compress, "zstd:3");
  assert.equal(parseParams({ compress: "zstd:19" }).compress, "zstd:19");
  assert.equal(p.dr_port, 10900);
  assert.equal(p.retry_delay_ms, 5000);
  assert.equal(p.verify_ssl, true);
  assert.equal(p.mode, undefined);
});

Deno.test("unknown, invalid and out-of-range parameters name the parameter", () => {
  const cases: [Record<string, string>, string][] = [
    [{ vmm: "x" }, "unknown parameter 'vmm'"],
    [{ ssh_port: "0" }, "ssh_port='0': must be 1..65535"],
    [{ ssh_port: "22x" }, "ssh_port='22x': must be a whole number"],
    [{ quiesce: "maybe" }, "quiesce='maybe': must be true or false"],
    [{ nbd_access_mode: "nfs" }, "nbd_access_mode='nfs': must be one of"],
    [{ mode: "push" }, "mode='push'"],
    [{ compress: "gzip" }, "compress='gzip'"],
    [
      { compress: "zstd:42" },
      "compress='zstd:42': must be none, zstd or zstd:N with N from 1 to 19",
    ],
    [{ url: "cs.example" }, "url='cs.example'"],
    [{ vm: "" }, "vm='': empty value"],
    [{ disks: "a,,b" }, "empty list item"],
    [{ bandwidth_limit: "fast" }, "bandwidth_limit='fast'"],
    [{ cross_restore: "xen" }, "cross_restore='xen'"],
  ];
  for (const [kv, msg] of cases) assert.throws(() => parseParams(kv), usageError(msg), msg);
});

Deno.test("unknown parameters never echo their value (it may be a mistyped secret)", () => {
  assert.throws(
    () => parseParams({ secretkye: "TOPSECRET" }),
    (e: unknown) => e instanceof UsageError && !e.message.includes("TOPSECRET"),
  );
});

Deno.test("secrets are never echoed", () => {
  assert.throws(
    () => parseParams({ psk: "short-secret" }),
    (e: unknown) =>
      e instanceof UsageError && e.message.includes("psk") && !e.message.includes("short-secret"),
  );
  const p = parseParams({ secretkey: "S3CR3T", psk: PSK, vm: "v" });
  const text = describeParams(p);
  assert.ok(!text.includes("S3CR3T") && !text.includes(PSK), text);
  assert.ok(text.includes("secretkey=***") && text.includes("vm=v"), text);
});

Deno.test("conflicting parameters are rejected", () => {
  const cases: [Record<string, string>, string][] = [
    [{ secretkey: "x", secretkey_file: "/k" }, "secretkey and secretkey_file conflict"],
    [{ psk: PSK, psk_file: "/k" }, "psk and psk_file conflict"],
    [{ node: "n0" }, "node needs qmp"],
    [{ listing: "/", query: "disks" }, "listing and query conflict"],
    [{ verify_ssl: "false", ca_file: "/ca" }, "verify_ssl=false and ca_file conflict"],
  ];
  for (const [kv, msg] of cases) assert.throws(() => parseParams(kv), usageError(msg), msg);
});

Deno.test("plugin entries: case-insensitive keys, repeated lists accumulate, repeats refused", () => {
  const p = parseParamEntries([["QMP", "/s"], ["node", "a"], ["node", "b,c"], ["Accurate", "1"]]);
  assert.deepEqual(p.node, ["a", "b", "c"]);
  assert.equal(p.qmp, "/s");
  assert.equal(p.accurate, true);
  assert.throws(() => parseParamEntries([["vm", "a"], ["vm", "b"]]), usageError("vm given twice"));
});

Deno.test("bandwidth_limit says bits or bytes", () => {
  assert.equal(parseParams({ bandwidth_limit: "100M" }).bandwidth_limit, 12_500_000);
  assert.equal(parseParams({ bandwidth_limit: "100Mbit" }).bandwidth_limit, 12_500_000);
  assert.equal(parseParams({ bandwidth_limit: "12MB" }).bandwidth_limit, 12_000_000);
  assert.equal(parseParams({ bandwidth_limit: "4096" }).bandwidth_limit, 4096);
  assert.throws(
    () => parseParams({ bandwidth_limit: "-5" }),
    usageError("bandwidth_limit='-5': must be at least 1 byte/s"),
  );
});

Deno.test("paths come out absolute, for QEMU and helpers with another working directory", () => {
  const cwd = Deno.cwd();
  const p = parseParams({ state_dir: "ss2", qmp: "/run/q.sock", psk_file: "../k" });
  assert.equal(p.state_dir, join(cwd, "ss2"));
  assert.equal(p.qmp, "/run/q.sock");
  assert.equal(p.psk_file, resolve(cwd, "../k"));
});

Deno.test("flags map to the same table", () => {
  assert.equal(flagToParam("--secretkey-file"), "secretkey_file");
  assert.equal(paramToFlag("secretkey_file"), "--secretkey-file");
});

Deno.test("the PSK is a plugin or config parameter, never a flag line in the help", () => {
  assert.equal(parseParams({ psk: PSK }).psk, PSK);
  assert.doesNotMatch(flagHelp(["psk_file", "psk"]), /--psk /);
  assert.match(flagHelp(["psk_file", "psk"], "plugin"), /\bpsk /);
});

Deno.test("a PSK file open to group or others is named with its mode", () => {
  assert.equal(pskModeProblem(0o100600), null);
  assert.equal(pskModeProblem(0o100400), null);
  assert.equal(pskModeProblem(0o100640), "open to group or others (mode 0640)");
  assert.equal(pskModeProblem(0o100604), "open to group or others (mode 0604)");
  assert.equal(pskModeProblem(null), null);
});
