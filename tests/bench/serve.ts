/**
 * `dirtybit serve` benchmarks, on synthetic chains written with the stream
 * writer (tests/bench/keep.ts):
 * - sequential read of the export of a 1 GiB full + 3 incrementals
 *   (`nbdcopy URI null:`, index present) against `dirtybit restore` of the
 *   same chain to a raw file (`sync` included), best of three interleaved
 *   runs; bar >= 0.8x;
 * - random 4 KiB reads for 10 s (4 libnbd connections, one request in
 *   flight each) against the same reads of the restored raw file served by
 *   `qemu-nbd -r`: IOPS, reported;
 * - peak resident memory of `dirtybit serve` on a 64 GiB sparse chain (full
 *   + 5 incrementals) while nbdcopy reads the whole export; bar <= 150 MiB
 *   (the runtime's own, `dirtybit --help`, shown beside it);
 * - time from starting `dirtybit serve` (index present) to the first 4 KiB
 *   read answered, median of three; bar <= 1 s (the runtime's start alone,
 *   `dirtybit --help`, shown beside it).
 *
 * `deno run -A tests/bench/serve.ts [DIR]` prints the table.
 *
 * @module
 */
import { join } from "node:path";
import { NbdClient } from "../../lib/nbd/client.ts";
import { delay } from "../../lib/core/async.ts";
import { atLeast, atMost, type BenchRow, mbps, renderTable, reported } from "./table.ts";
import { median, run, seconds } from "./measure.ts";
import { peakRss, timed, writeChain } from "./keep.ts";

const KiB = 1 << 10;
const MiB = 1 << 20;
const GiB = 1 << 30;
const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** A server child process and the URI it serves. */
interface Server {
  uri: string;
  /** Its peak resident memory so far, in bytes (VmHWM). */
  peakRss(): Promise<number>;
  /** Stops it; resolves to its stderr. */
  stop(): Promise<string>;
}

/** Starts `program args` and waits until it prints a line on stdout (dirtybit serve's URI). */
async function startServer(program: string, args: string[], uri?: string): Promise<Server> {
  const child = new Deno.Command(program, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const err = new Response(child.stderr).text();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (uri === undefined && !out.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`${program} exited before serving: ${await err}`);
    out += value;
  }
  reader.releaseLock();
  child.stdout.cancel().catch(() => {});
  return {
    uri: uri ?? out.trim(),
    peakRss: async () => {
      const status = await Deno.readTextFile(`/proc/${child.pid}/status`);
      return Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]) * KiB;
    },
    stop: async () => {
      child.kill("SIGTERM");
      await child.status;
      return await err;
    },
  };
}

function serveArgs(socket: string, chain: string[]): string[] {
  return ["run", "-A", MAIN, "serve", "--socket", socket, ...chain];
}

/** Connects to `uri`, retrying while the server starts. */
async function connect(uri: string): Promise<NbdClient> {
  for (let i = 0;; i++) {
    try {
      return await NbdClient.connect({ uri });
    } catch (err) {
      if (i > 500) throw err;
      await delay(5);
    }
  }
}

/** 4 KiB reads at random aligned offsets of `[0, span)` for `ms`, over `connections` clients. */
async function randomReads(uri: string, span: number, ms: number, connections = 4) {
  const clients = await Promise.all(Array.from({ length: connections }, () => connect(uri)));
  let reads = 0;
  const end = performance.now() + ms;
  try {
    await Promise.all(clients.map(async (c) => {
      const buf = new Uint8Array(4 * KiB);
      while (performance.now() < end) {
        await c.pread(buf, Math.floor(Math.random() * (span / buf.length)) * buf.length);
        reads++;
      }
    }));
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
  return reads / (ms / 1000);
}

export async function benchServe(dir: string): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const socket = join(dir, "serve.sock");
  const chain = await writeChain(dir, "serve1g", GiB, GiB, 3, 100 * MiB);
  const raw = join(dir, "restored.raw");
  try {
    // The first serve builds the indexes; the timed ones find them.
    await (await startServer(Deno.execPath(), serveArgs(socket, chain))).stop();
    const served: number[] = [];
    const restores: number[] = [];
    for (let round = 0; round < 3; round++) {
      const server = await startServer(Deno.execPath(), serveArgs(socket, chain));
      try {
        served.push(await seconds(() => run("nbdcopy", [server.uri, "null:"])));
      } finally {
        await server.stop();
      }
      await Deno.remove(raw).catch(() => {});
      await Deno.remove(`${raw}.dbit.json`).catch(() => {});
      restores.push(await timed(["restore", "--out", raw, ...chain]));
    }
    const s = Math.min(...served);
    const r = Math.min(...restores);
    rows.push(atLeast(
      "serve: nbdcopy of the export of a 1 GiB full + 3 incrementals vs restore of the chain to raw",
      `${s.toFixed(2)} s (${mbps(GiB, s)})`,
      `restore ${r.toFixed(2)} s (${mbps(GiB, r)})`,
      r / s,
      0.8,
    ));

    const server = await startServer(Deno.execPath(), serveArgs(socket, chain));
    let ours: number;
    try {
      ours = await randomReads(server.uri, GiB, 10_000);
    } finally {
      await server.stop();
    }
    const qsocket = join(dir, "qemu-nbd.sock");
    const qemu = await startServer(
      "qemu-nbd",
      ["-r", "-t", "-e", "4", "-f", "raw", "-k", qsocket, "--cache=none", "--aio=native", raw],
      `nbd+unix:///?socket=${qsocket}`,
    );
    let theirs: number;
    try {
      theirs = await randomReads(qemu.uri, GiB, 10_000);
    } finally {
      await qemu.stop();
    }
    rows.push(reported(
      "serve: random 4 KiB reads, 10 s, 4 connections (IOPS) vs qemu-nbd -r of the restored raw",
      `${ours.toFixed(0)} IOPS`,
      `qemu-nbd ${theirs.toFixed(0)} IOPS`,
      ours / theirs,
    ));
  } finally {
    for (const p of [...chain, ...chain.map((c) => `${c}.idx`), raw, `${raw}.dbit.json`]) {
      await Deno.remove(p).catch(() => {});
    }
  }

  const sparse = await writeChain(dir, "sparse64g", 64 * GiB, 256 * MiB, 5, 32 * MiB);
  try {
    const peaks: number[] = [];
    for (let round = 0; round < 3; round++) {
      const server = await startServer(Deno.execPath(), serveArgs(socket, sparse));
      try {
        await run("nbdcopy", [server.uri, "null:"]);
        peaks.push(await server.peakRss());
      } finally {
        await server.stop();
      }
    }
    const peak = median(peaks);
    const runtime = median(await Promise.all([0, 1, 2].map(() => peakRss(["--help"]))));
    rows.push(atMost(
      "serve: peak memory, 64 GiB sparse chain (full + 5 incrementals) read whole by nbdcopy",
      `${(peak / MiB).toFixed(0)} MiB`,
      `150 MiB (runtime alone ${(runtime / MiB).toFixed(0)} MiB)`,
      peak / (150 * MiB),
      1.0,
    ));

    const firsts: number[] = [];
    for (let round = 0; round < 3; round++) {
      const t0 = performance.now();
      const server = await startServer(Deno.execPath(), serveArgs(socket, sparse));
      try {
        const client = await connect(server.uri);
        await client.pread(new Uint8Array(4 * KiB), 0);
        firsts.push((performance.now() - t0) / 1000);
        await client.close();
      } finally {
        await server.stop();
      }
    }
    const first = median(firsts);
    const starts: number[] = [];
    for (let round = 0; round < 3; round++) {
      starts.push(await seconds(() => run(Deno.execPath(), ["run", "-A", MAIN, "--help"])));
    }
    rows.push(atMost(
      "serve: start to first 4 KiB read answered, 64 GiB chain, index present",
      `${first.toFixed(2)} s`,
      `1 s (runtime start alone ${median(starts).toFixed(2)} s)`,
      first,
      1.0,
    ));
  } finally {
    for (const p of [...sparse, ...sparse.map((c) => `${c}.idx`)]) {
      await Deno.remove(p).catch(() => {});
    }
  }
  return rows;
}

if (import.meta.main) {
  const dir = Deno.args[0] ?? await Deno.makeTempDir({ prefix: "dirtybit-bench-" });
  try {
    console.log(renderTable(await benchServe(dir)));
  } finally {
    if (!Deno.args[0]) await Deno.remove(dir, { recursive: true });
  }
}
