/**
 * `deno task bench`: runs every benchmark and prints one table of ratios
 * against the reference tools measured in the same run. Sizes follow the
 * issues' bars but fit a 2-core machine.
 *
 * @module
 */
import { benchBackup, benchHashDb, benchMemory } from "./engine.ts";
import { type BenchRow, renderTable } from "./table.ts";
import { benchZstd } from "./zstd.ts";
import { benchTunnel } from "./tunnel.ts";
import { benchBackend } from "./backend.ts";
import { benchConvert } from "./convert.ts";
import { benchReplication } from "./replication.ts";
import { benchFailback } from "./failback.ts";
import { benchVmBackup } from "./vm_backup.ts";
import { benchDomainBackup } from "./domain_backup.ts";
import { benchBacula15 } from "./bacula15.ts";
import { benchMerge } from "./keep.ts";
import { benchServe } from "./serve.ts";
import { tuneMalloc } from "../../ffi/libc.ts";

const groups: [string, (dir: string) => Promise<BenchRow[]>][] = [
  ["backup engine", benchBackup],
  ["memory", benchMemory],
  ["hash DB", benchHashDb],
  ["zstd", () => benchZstd()],
  ["ssh tunnel", () => benchTunnel()],
  ["bacula backend", (dir) => benchBackend(dir)],
  ["bacula 15 plugin", () => benchBacula15()],
  ["conversion", benchConvert],
  ["replication", (dir) => benchReplication(dir)],
  ["failback", (dir) => benchFailback(dir)],
  ["vm backup", (dir) => benchVmBackup(dir)],
  ["domain backup", (dir) => benchDomainBackup(dir)],
  ["merge", benchMerge],
  ["serve", benchServe],
];

// As main.ts does: the engine benchmarks run in this process.
tuneMalloc();
const only = Deno.args;
const dir = await Deno.makeTempDir({ prefix: "dirtybit-bench-" });
const rows: BenchRow[] = [];
try {
  for (const [name, fn] of groups) {
    if (only.length > 0 && !only.some((o) => name.includes(o))) continue;
    console.error(`running ${name} benchmarks...`);
    try {
      rows.push(...await fn(dir));
    } catch (err) {
      rows.push({
        name: `${name}: failed to run`,
        measured: String((err as Error).message).slice(0, 80),
        reference: "-",
        ratio: 0,
        bar: "-",
        ok: false,
      });
    }
  }
} finally {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
console.log(renderTable(rows));
