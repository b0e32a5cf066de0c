import assert from "node:assert/strict";
import { join } from "node:path";
import { UsageError } from "../core/errors.ts";
import { type FlagTable, parseFlags, parseParamFlags } from "./args.ts";

function usageError(text: string) {
  return (e: unknown) => e instanceof UsageError && e.message.includes(text);
}

const PSK = "0123456789abcdef0123456789abcdef";

const FLAGS = {
  out: { type: "string", path: true },
  node: { type: "string", multiple: true },
  level: { type: "string" },
  json: { type: "boolean" },
} as const satisfies FlagTable;

Deno.test("a command's flag table gives its values: paths absolute, lists in order", () => {
  const r = parseFlags(
    "backup",
    ["--out", "d/", "--node=a", "--node", "b", "--json", "x"],
    FLAGS,
    "",
  )!;
  assert.deepEqual(r.values, { out: `${join(Deno.cwd(), "d")}/`, node: ["a", "b"], json: true });
  assert.deepEqual(r.positionals, ["x"]);
  const dash = parseFlags("backup", ["--out", "-", "--level", "-5", "--", "--json"], FLAGS, "")!;
  assert.deepEqual(dash.values, { out: "-", level: "-5" });
  assert.deepEqual(dash.positionals, ["--json"]);
  assert.deepEqual(parseFlags("backup", ["--no-json"], FLAGS, "")!.values, { json: false });
  // A command's own switch never takes the next argument: it may be a positional.
  const word = parseFlags("backup", ["--json", "1"], FLAGS, "")!;
  assert.deepEqual([word.values, word.positionals], [{ json: true }, ["1"]]);
});

Deno.test("unknown, repeated and value-less flags: one wording, naming the flag and the help", () => {
  const see = "see 'dirtybit backup --help'";
  for (
    const [args, problem] of [
      [["--bogus"], "unknown option --bogus"],
      [["-x"], "unknown option -x"],
      [["--level"], "option --level needs a value"],
      [["--level", "--json"], "option --level needs a value"],
      [["--out", "a", "--out=b"], "option --out given twice"],
      [["--json=maybe"], "option --json must be true or false"],
    ] as const
  ) {
    assert.throws(
      () => parseFlags("backup", [...args], FLAGS, ""),
      usageError(`backup: ${problem}: ${see}`),
    );
  }
});

Deno.test("parameter flags: the table's rows, restricted, on the same loop", () => {
  const r = parseParamFlags(
    "replicate push",
    ["--qmp", "/q.sock", "--node=n0", "--no-quiesce", "--verify-ssl", "false", "--out", "-", "x"],
    { extra: { out: { type: "string" }, json: { type: "boolean" } } },
  );
  assert.equal(r.params.qmp, "/q.sock");
  assert.deepEqual(r.params.node, ["n0"]);
  assert.equal(r.params.quiesce, false);
  assert.equal(r.params.verify_ssl, false);
  assert.deepEqual(r.extra, { out: "-" });
  assert.deepEqual(r.positionals, ["x"]);
  const b = parseParamFlags("x", ["--json", "--quiesce", "-"], {
    extra: { json: { type: "boolean" } },
  });
  assert.equal(b.extra.json, true);
  assert.equal(b.params.quiesce, true);
  assert.deepEqual(b.positionals, ["-"]);
  const p = parseParamFlags("x", ["--replica-dir", "rep/", "--name", "x"], {
    extra: { name: { type: "string" } },
  });
  assert.equal(p.params.replica_dir, join(Deno.cwd(), "rep"));
  assert.deepEqual(p.extra, { name: "x" });
  assert.throws(() => parseParamFlags("x", ["--bogus", "1"]), usageError("unknown option --bogus"));
  assert.throws(
    () => parseParamFlags("x", ["--vm", "x"], { only: ["qmp", "node"] }),
    usageError("unknown option --vm"),
  );
  assert.throws(() => parseParamFlags("x", ["--qmp"]), usageError("--qmp needs a value"));
  assert.throws(
    () => parseParamFlags("x", ["--name", "a", "--name", "b"]),
    usageError("x: option --name given twice"),
  );
  assert.throws(
    () => parseParamFlags("x", ["--ssh-port", "99999"]),
    usageError("ssh_port='99999'"),
  );
});

Deno.test("the PSK is never a flag (ps shows flags), and the refusal never shows it", () => {
  assert.throws(() => parseParamFlags("x", ["--psk", PSK]), usageError("--psk is refused"));
  assert.throws(
    () => parseParamFlags("x", [`--psk=${PSK}`]),
    (e: unknown) => !String(e).includes(PSK),
  );
});
