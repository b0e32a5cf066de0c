/**
 * The layering of lib/ (docs/architecture.md), checked on the static import
 * graph of main.ts and every lib/**\/*.ts:
 * - nothing under lib/ outside lib/cli imports lib/cli (front ends only translate: the Bacula
 *   backend and the use cases must not need the CLI);
 * - no cycle between the folders of lib/ (a folder is the first path segment below lib/, so
 *   lib/backup/engine.ts importing lib/stream/writer.ts is the edge backup → stream);
 * - no cycle between files.
 *
 * Type-only imports count. They are erased at run time, but they couple the
 * folders all the same: a type declared in the wrong folder makes its users
 * depend on that folder, a change of it breaks them, and a folder cycle made
 * of types is the same tangle to a reader as one made of calls. Moving the type
 * to the folder it belongs to is the fix either way.
 *
 * Unit tests beside the code (`*_test.ts`) count for the first rule (a test of
 * the backup engine has no business driving the CLI) but not for the folder
 * graph: a test may use a higher layer to check a lower one (restore what it
 * backed up) without making the product's layers depend on each other. Nothing
 * imports a test, so it can take part in no file cycle.
 *
 * Pure and fast: the imports are read as text (tests/fixtures/import_graph.ts).
 */
import assert from "node:assert/strict";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { cycles, type Edge, importGraph, parseImports, tsFiles } from "./fixtures/import_graph.ts";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const libFiles = await tsFiles(ROOT, "lib");
const edges = await importGraph(ROOT, ["main.ts", ...libFiles]);

const isTest = (file: string) => file.endsWith("_test.ts");

/** `lib/backup` for `lib/backup/engine.ts`; null outside lib/. */
function folderOf(file: string): string | null {
  const parts = file.split("/");
  return parts[0] === "lib" && parts.length > 2 ? `${parts[0]}/${parts[1]}` : null;
}

function show(e: Edge): string {
  return `  ${e.from}:${e.line} → ${e.to}${e.typeOnly ? " (type only)" : ""}`;
}

Deno.test("architecture: nothing under lib/ outside lib/cli imports lib/cli", () => {
  const bad = edges.filter((e) =>
    folderOf(e.from) !== null && folderOf(e.from) !== "lib/cli" && folderOf(e.to) === "lib/cli"
  );
  assert.ok(
    bad.length === 0,
    `${bad.length} import(s) of lib/cli from outside it; move what they need to a neutral module:\n` +
      bad.map(show).join("\n"),
  );
});

Deno.test("architecture: no cycle between the folders of lib/", () => {
  const folderEdges = new Map<string, Edge[]>();
  for (const e of edges) {
    if (isTest(e.from)) continue;
    const a = folderOf(e.from), b = folderOf(e.to);
    if (a === null || b === null || a === b) continue;
    const key = `${a} ${b}`;
    folderEdges.set(key, [...(folderEdges.get(key) ?? []), e]);
  }
  const found = cycles([...folderEdges.keys()].map((k) => k.split(" ") as [string, string]));
  const report = found.map(({ members, path }) => {
    const lines = [`cycle: ${path.join(" → ")} (tangled: ${members.join(", ")})`];
    for (let i = 0; i + 1 < path.length; i++) {
      lines.push(...folderEdges.get(`${path[i]} ${path[i + 1]}`)!.map(show));
    }
    return lines.join("\n");
  });
  assert.ok(
    found.length === 0,
    `${found.length} folder cycle(s); each edge with the imports that make it:\n` +
      report.join("\n"),
  );
});

Deno.test("architecture: no cycle between files", () => {
  const byPair = new Map(edges.map((e) => [`${e.from} ${e.to}`, e]));
  const found = cycles(edges.map((e) => [e.from, e.to]));
  const report = found.map(({ members, path }) => {
    const lines = [`cycle: ${path.join(" → ")} (tangled: ${members.join(", ")})`];
    for (let i = 0; i + 1 < path.length; i++) {
      lines.push(show(byPair.get(`${path[i]} ${path[i + 1]}`)!));
    }
    return lines.join("\n");
  });
  assert.ok(found.length === 0, `${found.length} file cycle(s):\n` + report.join("\n"));
});

Deno.test("architecture: every local import names a file that exists", async () => {
  // A specifier the parser got wrong would silently drop an edge; a missing file shows it.
  const missing: Edge[] = [];
  for (const e of edges) {
    try {
      await Deno.stat(`${ROOT}/${e.to}`);
    } catch {
      missing.push(e);
    }
  }
  assert.deepEqual(missing.map(show), []);
});

Deno.test("import graph: statements the parser reads and those it passes over", () => {
  const text = [
    `import { a } from "./a.ts";`,
    `import type { B } from "../x/b.ts";`,
    `import {`,
    `  type C,`,
    `  type D,`,
    `} from "./c.ts";`,
    `import e, { type E, f } from "./e.ts";`,
    `import * as g from './g.ts';`,
    `import "./side.ts";`,
    `export { h } from "./h.ts";`,
    `export type { I } from "./i.ts";`,
    `export * from "./j.ts";`,
    `import assert from "node:assert/strict";`,
    `export const k = "from './not_this.ts'";`,
    "const src = `import { X } from ${JSON.stringify(url)};`;",
    `const w = new Worker(new URL("./worker.ts", import.meta.url).href);`,
  ].join("\n");
  const got = parseImports("lib/p/q.ts", text).map((e) =>
    `${e.line} ${e.to}${e.typeOnly ? " type" : ""}`
  );
  assert.deepEqual(got, [
    "1 lib/p/a.ts",
    "2 lib/x/b.ts type",
    "3 lib/p/c.ts type",
    "7 lib/p/e.ts",
    "8 lib/p/g.ts",
    "9 lib/p/side.ts",
    "10 lib/p/h.ts",
    "11 lib/p/i.ts type",
    "12 lib/p/j.ts",
    "16 lib/p/worker.ts",
  ]);
});

Deno.test("import graph: cycles are found and shown as a path", () => {
  assert.deepEqual(cycles([["a", "b"], ["b", "c"], ["c", "d"]]), []);
  assert.deepEqual(cycles([["b", "c"], ["c", "a"], ["a", "b"], ["c", "d"]]), [
    { members: ["a", "b", "c"], path: ["a", "b", "c", "a"] },
  ]);
  // Two cycles sharing a: one component, the shortest cycle through a shown.
  assert.deepEqual(cycles([["a", "b"], ["b", "c"], ["c", "a"], ["a", "d"], ["d", "a"]]), [
    { members: ["a", "b", "c", "d"], path: ["a", "d", "a"] },
  ]);
  assert.deepEqual(cycles([["x", "x"], ["p", "q"], ["q", "p"]]), [
    { members: ["p", "q"], path: ["p", "q", "p"] },
    { members: ["x"], path: ["x", "x"] },
  ]);
});
