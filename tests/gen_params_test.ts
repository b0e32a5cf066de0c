/**
 * The Bacula plugin's build (bacula-plugin/Makefile) runs gen-params.ts with
 * nothing but `--allow-write`: the parameter table it reads must not load the
 * backup engine, whose npm packages ask for more at import (@node-rs/xxhash
 * reads the environment). So its import graph, as Deno resolves it, reaches
 * no file under lib/backup at all, and what runs (imports that are not
 * type-only) reaches no npm package; and the generation itself succeeds
 * exactly as the Makefile runs it.
 */
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const GEN_PARAMS = join(ROOT, "bacula-plugin", "gen-params.ts");

interface Dependency {
  specifier: string;
  code?: { specifier: string };
  type?: { specifier: string };
}

interface GraphModule {
  specifier: string;
  dependencies?: Dependency[];
}

async function denoInfo(): Promise<{ roots: string[]; modules: GraphModule[] }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", GEN_PARAMS],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

/** The specifiers reached from the roots, following code imports only or type-only ones too. */
function reached(
  graph: { roots: string[]; modules: GraphModule[] },
  withTypes: boolean,
): Map<string, string | null> {
  const byName = new Map(graph.modules.map((m) => [m.specifier, m]));
  const from = new Map<string, string | null>(graph.roots.map((r) => [r, null]));
  const queue = [...graph.roots];
  while (queue.length > 0) {
    const at = queue.shift()!;
    for (const dep of byName.get(at)?.dependencies ?? []) {
      for (const to of [dep.code?.specifier, withTypes ? dep.type?.specifier : undefined]) {
        if (to === undefined || from.has(to)) continue;
        from.set(to, at);
        queue.push(to);
      }
    }
  }
  return from;
}

/** `a ← b ← gen-params.ts`: how `specifier` was reached. */
function chain(from: Map<string, string | null>, specifier: string): string {
  const path: string[] = [];
  for (let s: string | null | undefined = specifier; s; s = from.get(s)) {
    path.push(s.replace(`file://${ROOT}/`, ""));
  }
  return path.join(" ← ");
}

Deno.test("gen-params: its imports reach no lib/backup file, and what runs no npm package", async () => {
  const graph = await denoInfo();
  const all = reached(graph, true);
  const backup = [...all.keys()].filter((s) => s.startsWith(`file://${ROOT}/lib/backup/`));
  assert.deepEqual(backup.map((s) => chain(all, s)), []);
  const code = reached(graph, false);
  assert.ok(code.size > 1, "gen-params imports the parameter table");
  const npm = [...code.keys()].filter((s) => s.startsWith("npm:"));
  assert.deepEqual(npm.map((s) => chain(code, s)), []);
});

Deno.test("gen-params: writes the header with only --allow-write, as the Makefile runs it", async () => {
  const out = await Deno.makeTempDir({ prefix: "dirtybit-gen-params-" });
  try {
    const header = join(out, "cloudstack-params.h");
    const run = await new Deno.Command(Deno.execPath(), {
      args: ["run", `--allow-write=${out}`, GEN_PARAMS, header],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    assert.equal(run.code, 0, new TextDecoder().decode(run.stderr));
    const text = await Deno.readTextFile(header);
    assert.match(text, /"nbd_access_mode"/);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
