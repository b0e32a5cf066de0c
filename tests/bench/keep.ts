/**
 * Synthetic full benchmarks:
 * - `dirtybit merge` of a 2 GiB full + 5 incrementals (each rewriting 10 %
 *   of the disk, data compressible about 2:1, zstd:3) against `dirtybit
 *   restore` of the same chain to a raw file, both followed by `sync`, best
 *   of three interleaved runs; bar >= 1.0x (merge writes only the last
 *   point's data, compressed, where restore writes every stream's data);
 * - peak resident memory of `dirtybit merge` on a 64 GiB sparse chain
 *   (256 MiB data in the full, 32 MiB in each of 5 incrementals): total, and
 *   above the runtime's own (`dirtybit --help`, which loads the same code);
 *   bar <= 100 MiB above the runtime (the runtime alone is about 65 MiB).
 *
 * The chains are written with the stream writer, as a backup would.
 * `deno run -A tests/bench/keep.ts [DIR]` prints the table.
 *
 * @module
 */
import { join } from "node:path";
import { StreamWriter } from "../../lib/stream/writer.ts";
import { atLeast, atMost, type BenchRow, mbps, renderTable } from "./table.ts";
import { fillRandom } from "../fixtures/bytes.ts";
import { median, run } from "./measure.ts";

const MiB = 1 << 20;
const GiB = 1 << 30;
const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** 1 MiB of data that zstd compresses about 2:1: 4 random bits per byte under a fixed `high` nibble. */
function halfRandom(high: number): Uint8Array {
  const out = fillRandom(new Uint8Array(MiB));
  for (let i = 0; i < out.length; i++) out[i] = (out[i] & 0x0f) | (high << 4);
  return out;
}

/**
 * Writes a chain: a full with `fullData` bytes at the disk's start then zeros,
 * and `incrementals` streams each writing `incData` bytes in 1 MiB pieces at
 * places spread over the data. Returns the stream paths.
 */
export async function writeChain(
  dir: string,
  name: string,
  size: number,
  fullData: number,
  incrementals: number,
  incData: number,
): Promise<string[]> {
  const paths: string[] = [];
  let parent: string | null = null;
  for (let s = 0; s <= incrementals; s++) {
    const path = join(dir, `${name}-${s}.dbit`);
    const file = await Deno.open(path, { write: true, create: true, truncate: true });
    const id = `${name}-${s}`;
    const writer = new StreamWriter(file.writable, {
      disk: name,
      virtualSize: size,
      blockSize: 64 << 10,
      level: s === 0 ? "full" : "incremental",
      backupId: id,
      parentId: parent,
      chainId: `${name}-0`,
      checkpoint: id,
      compression: "zstd:3",
    });
    if (s === 0) {
      for (let off = 0; off < fullData; off += MiB) await writer.writeData(off, halfRandom(s));
      await writer.writeZero(fullData, size - fullData);
    } else {
      const pieces = incData / MiB;
      const stride = Math.floor(fullData / MiB / pieces);
      for (let p = 0; p < pieces; p++) {
        await writer.writeData((p * stride + s) * MiB, halfRandom(s));
      }
    }
    await writer.finish();
    paths.push(path);
    parent = id;
  }
  return paths;
}

/** Seconds `dirtybit ARGS` takes, `sync` included. */
export async function timed(args: string[]): Promise<number> {
  const t0 = performance.now();
  await run(Deno.execPath(), ["run", "-A", MAIN, ...args]);
  await run("sync", []);
  return (performance.now() - t0) / 1000;
}

/** Peak resident bytes of `dirtybit ARGS`, measured by GNU time. */
export async function peakRss(args: string[]): Promise<number> {
  const out = await new Deno.Command("/usr/bin/time", {
    args: ["-f", "%M", Deno.execPath(), "run", "-A", MAIN, ...args],
    stdout: "null",
    stderr: "piped",
  }).output();
  const lines = new TextDecoder().decode(out.stderr).trim().split("\n");
  if (!out.success) throw new Error(`dirtybit ${args[0]} failed: ${lines.join(" ")}`);
  return Number(lines.at(-1)) * 1024;
}

export async function benchMerge(dir: string): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const chain = await writeChain(dir, "merge2g", 2 * GiB, 2 * GiB, 5, 200 * MiB);
  const merges: number[] = [];
  const restores: number[] = [];
  const merged = join(dir, "merged.dbit");
  const raw = join(dir, "restored.raw");
  try {
    for (let round = 0; round < 3; round++) {
      await Deno.remove(merged).catch(() => {});
      merges.push(await timed(["merge", ...chain, "--out", merged]));
      await Deno.remove(raw).catch(() => {});
      await Deno.remove(`${raw}.dbit.json`).catch(() => {});
      restores.push(await timed(["restore", "--out", raw, ...chain]));
    }
    const m = Math.min(...merges);
    const r = Math.min(...restores);
    rows.push(atLeast(
      "merge of a 2 GiB full + 5 incrementals vs restore of the chain to raw",
      `${m.toFixed(2)} s (${mbps(2 * GiB, m)})`,
      `restore ${r.toFixed(2)} s`,
      r / m,
      1.0,
    ));
  } finally {
    for (const p of [...chain, merged, raw, `${raw}.dbit.json`]) {
      await Deno.remove(p).catch(() => {});
    }
  }

  const sparse = await writeChain(dir, "sparse64g", 64 * GiB, 256 * MiB, 5, 32 * MiB);
  try {
    const baselines: number[] = [];
    const peaks: number[] = [];
    for (let round = 0; round < 3; round++) {
      baselines.push(await peakRss(["--help"]));
      await Deno.remove(merged).catch(() => {});
      peaks.push(await peakRss(["merge", ...sparse, "--out", merged]));
    }
    const peak = median(peaks);
    const above = peak - median(baselines);
    rows.push(atMost(
      "merge peak memory above the runtime's, 64 GiB sparse chain (full + 5 incrementals)",
      `${(above / MiB).toFixed(0)} MiB (total ${(peak / MiB).toFixed(0)} MiB)`,
      "100 MiB",
      above / (100 * MiB),
      1.0,
    ));
  } finally {
    for (const p of [...sparse, merged]) await Deno.remove(p).catch(() => {});
  }
  return rows;
}

if (import.meta.main) {
  const dir = Deno.args[0] ?? await Deno.makeTempDir({ prefix: "dirtybit-bench-" });
  try {
    console.log(renderTable(await benchMerge(dir)));
  } finally {
    if (!Deno.args[0]) await Deno.remove(dir, { recursive: true });
  }
}
