/**
 * Streaming conversion benchmark: a 2 GiB disk with ~40 % allocated data,
 * served by qemu-nbd, converted per format by `dirtybit convert --out - | cat
 * > FILE` versus `qemu-img convert` to a regular file, both followed by
 * `sync`. Bars: >= 1.0x for uncompressed formats, >= 2x for VMDK
 * streamOptimized. The source image is made once and reused.
 *
 * `deno run -A tests/bench/convert.ts [FORMAT...]` prints a table.
 *
 * @module
 */
import { pattern } from "../formats/memory_source.ts";

/** One format's result; ratio = referenceSeconds / dirtybitSeconds. */
export interface ConvertRow {
  name: string;
  dirtybitSeconds: number;
  referenceSeconds: number;
  ratio: number;
  bar: number;
  ok: boolean;
}

/** Options for {@link benchConvert}. */
export interface ConvertBenchOptions {
  /** Where the source image is kept between runs and outputs are written. */
  dir?: string;
  /** Disk size in bytes (default 2 GiB). */
  size?: number;
  /** Only formats whose name contains one of these. */
  only?: string[];
}

const MiB = 1 << 20;
const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** [name, dirtybit args, qemu-img -O/-o args, bar] */
const CASES: [string, string[], string[], number][] = [
  ["raw (receiver: cp --sparse=always)", ["--format", "raw"], ["-O", "raw"], 1.0],
  ["qcow2", ["--format", "qcow2"], ["-O", "qcow2"], 1.0],
  ["vhdx dynamic (1M blocks)", ["--format", "vhdx"], ["-O", "vhdx", "-o", "block_size=1M"], 1.0],
  ["vhd dynamic", ["--format", "vhd"], ["-O", "vpc", "-o", "force_size=on"], 1.0],
  ["vmdk monolithicSparse", ["--format", "vmdk", "--subformat", "monolithicSparse"], [
    "-O",
    "vmdk",
  ], 1.0],
  [
    "vmdk streamOptimized",
    ["--format", "vmdk"],
    ["-O", "vmdk", "-o", "subformat=streamOptimized"],
    2.0,
  ],
];

/** Makes (once) a sparse raw image: 4 MiB of data in every 10 MiB, half-compressible. */
async function ensureSource(path: string, size: number): Promise<void> {
  try {
    if ((await Deno.stat(path)).size === size) return;
  } catch { /* not made yet */ }
  const tmp = `${path}.part`;
  using f = await Deno.open(tmp, { write: true, create: true, truncate: true });
  await f.truncate(size);
  for (let off = 0, seed = 1; off < size; off += 10 * MiB, seed++) {
    await f.seek(off, Deno.SeekMode.Start);
    const data = pattern(Math.min(4 * MiB, size - off), seed);
    let done = 0;
    while (done < data.length) done += await f.write(data.subarray(done));
  }
  await Deno.rename(tmp, path);
}

async function timed(cmd: string): Promise<number> {
  const t0 = performance.now();
  const out = await new Deno.Command("sh", { args: ["-c", cmd], stderr: "piped" }).output();
  if (!out.success) throw new Error(`${cmd}: ${new TextDecoder().decode(out.stderr).trim()}`);
  return (performance.now() - t0) / 1000;
}

const q = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;

/** Runs the benchmark; returns one row per format. */
export async function benchConvert(opts: ConvertBenchOptions = {}): Promise<ConvertRow[]> {
  const size = opts.size ?? 2 * 1024 * MiB;
  const dir = opts.dir ?? `${Deno.env.get("TMPDIR") ?? "/tmp"}/dirtybit-bench-convert`;
  await Deno.mkdir(dir, { recursive: true });
  const source = `${dir}/source-${size}.raw`;
  await ensureSource(source, size);
  const work = await Deno.makeTempDir({ dir, prefix: "run-" });
  const socket = `${work}/nbd.sock`;
  const uri = `nbd+unix:///disk?socket=${socket}`;
  const server = new Deno.Command("qemu-nbd", {
    args: ["-r", "-f", "raw", "-k", socket, "-x", "disk", "-t", "-e", "16", source],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const rows: ConvertRow[] = [];
  try {
    for (let i = 0;; i++) {
      try {
        (await Deno.connect({ transport: "unix", path: socket })).close();
        break;
      } catch {
        if (i > 500) throw new Error("qemu-nbd did not start");
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    for (const [name, ours, theirs, bar] of CASES) {
      if (opts.only && !opts.only.some((o) => name.includes(o))) continue;
      const outA = `${work}/dirtybit.img`, outB = `${work}/qemu-img.img`;
      // Over a pipe raw holes travel as zeros; the receiver sparsifies them (spec §1.1).
      const receiver = name.startsWith("raw")
        ? `cp --sparse=always /dev/stdin ${q(outA)}`
        : `cat > ${q(outA)}`;
      const dirtybitSeconds = await timed(
        `deno run -A ${q(MAIN)} convert --from ${q(uri)} ${
          ours.join(" ")
        } --out - | ${receiver} && sync`,
      );
      await Deno.remove(outA);
      const referenceSeconds = await timed(
        `qemu-img convert -f raw ${theirs.map(q).join(" ")} ${q(uri)} ${q(outB)} && sync`,
      );
      await Deno.remove(outB);
      const ratio = referenceSeconds / dirtybitSeconds;
      rows.push({ name, dirtybitSeconds, referenceSeconds, ratio, bar, ok: ratio >= bar });
    }
  } finally {
    try {
      server.kill("SIGTERM");
    } catch { /* already gone */ }
    await server.status;
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
  return rows;
}

if (import.meta.main) {
  const rows = await benchConvert({ only: Deno.args.length ? Deno.args : undefined });
  console.log("format                      dirtybit|pipe  qemu-img+sync  ratio  bar");
  for (const r of rows) {
    console.log(
      `${r.name.padEnd(28)}${r.dirtybitSeconds.toFixed(2).padStart(12)}s${
        r.referenceSeconds.toFixed(2).padStart(13)
      }s${r.ratio.toFixed(2).padStart(7)}x  >=${r.bar}x ${r.ok ? "ok" : "MISSED"}`,
    );
  }
}
