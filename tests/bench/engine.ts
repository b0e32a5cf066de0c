/**
 * Backup engine benchmarks (issue 2): full backup throughput against nbdcopy
 * on the same export, an incremental with 1 % dirty, resident memory per
 * additional concurrent disk, and hash DB lookups against disk size.
 *
 * @module
 */
import { join } from "node:path";
import { StorageDaemon } from "../../lib/qemu/storage_daemon.ts";
import { runBackup } from "../../lib/backup/engine.ts";
import { HashDb } from "../../lib/cbt/hashdb.ts";
import { atLeast, atMost, type BenchRow, mbps } from "./table.ts";
import { median, nullSink, run } from "./measure.ts";
import { fillRandom } from "../fixtures/bytes.ts";
import { writeAll } from "../../lib/core/bytes.ts";
import { DEFAULT_COMPRESSION } from "../../lib/stream/compression.ts";
import { StreamReader } from "../../lib/stream/reader.ts";
import { passThroughSink, type StreamSink } from "../../lib/sinks/sink.ts";

const MiB = 1 << 20;
const GiB = 1 << 30;

/** A 2 GiB-ish disk image: half incompressible, half compressible, made once per run. */
async function makeImage(dir: string, size: number): Promise<string> {
  const raw = join(dir, "src.raw");
  const file = await Deno.open(raw, { write: true, create: true, truncate: true });
  const chunk = new Uint8Array(4 * MiB);
  const text = new TextEncoder().encode(
    "dirtybit benchmark row 0000000000 lorem ipsum dolor sit amet\n",
  );
  for (let off = 0; off < size; off += chunk.length) {
    if (off < size / 2) {
      fillRandom(chunk);
    } else {
      for (let i = 0; i < chunk.length; i += text.length) {
        chunk.set(text.subarray(0, Math.min(text.length, chunk.length - i)), i);
      }
      crypto.getRandomValues(chunk.subarray(0, 4096));
    }
    await writeAll(file, chunk);
  }
  file.close();
  const image = join(dir, "disk.qcow2");
  await run("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", raw, image]);
  await Deno.remove(raw);
  return image;
}

/**
 * Stored payload bytes of the 2 GiB disk's text half with every record
 * compressed at zstd:3: the writer before it skipped compression of records
 * that do not shrink (dirtybit 2026-12-03, stream format version 2).
 */
const TEXT_HALF_ALL_COMPRESSED = 1_220_352;

/**
 * Runs `backup` with a sink that reads its stream back and returns the
 * payload bytes stored for records at or after disk offset `from`.
 */
async function storedBytesFrom(
  from: number,
  backup: (sink: () => Promise<StreamSink>) => Promise<unknown>,
): Promise<number> {
  const pipe = new TransformStream<Uint8Array, Uint8Array>();
  const counted = (async () => {
    const reader = await StreamReader.open(pipe.readable);
    let stored = 0;
    for await (const rec of reader.records()) {
      if (rec.kind === "data" && rec.offset >= from) stored += rec.storedLength;
    }
    return stored;
  })();
  await backup(() => Promise.resolve(passThroughSink(pipe.writable)));
  return await counted;
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const value = await fn();
  return [value, (performance.now() - t0) / 1000];
}

/** Full and incremental backup throughput and data volumes. */
export async function benchBackup(dir: string, size = 2 * GiB): Promise<BenchRow[]> {
  const image = await makeImage(dir, size);
  const nbdSocket = join(dir, "nbd.sock");
  const guest = `nbd+unix:///guest?socket=${nbdSocket}`;
  const daemon = await StorageDaemon.start({
    disks: [{ node: "vda", image, exportName: "guest" }],
    qmpSocket: join(dir, "qmp.sock"),
    nbdSocket,
  });
  const rows: BenchRow[] = [];
  try {
    const job = { qmp: daemon.qmpSocket, nbdSocket, nodes: ["vda"], stateDir: join(dir, "state") };
    // Warm the page cache so both readers see the same conditions.
    await run("nbdcopy", [guest, "null:"]);
    const nbdcopyRuns: number[] = [];
    const plainRuns: number[] = [];
    for (let round = 0; round < 3; round++) {
      nbdcopyRuns.push((await timed(() => run("nbdcopy", [guest, "null:"])))[1]);
      plainRuns.push(
        (await timed(() =>
          runBackup(
            { ...job, level: "full", compression: "none" },
            nullSink,
          )
        ))[1],
      );
    }
    const ref = median(nbdcopyRuns);
    const plain = median(plainRuns);
    rows.push(
      atLeast(
        "full backup 2 GiB, no compression, vs nbdcopy to null:",
        mbps(size, plain),
        mbps(size, ref),
        ref / plain,
        0.9,
      ),
    );
    const zstdRuns: number[] = [];
    let streamBytes = 0;
    for (let round = 0; round < 3; round++) {
      const [full, secs] = await timed(() =>
        runBackup({ ...job, level: "full", compression: DEFAULT_COMPRESSION }, nullSink)
      );
      zstdRuns.push(secs);
      streamBytes = full[0].streamBytes;
    }
    const zstdSeconds = median(zstdRuns);
    rows.push(atLeast(
      `full backup 2 GiB, default compression (${DEFAULT_COMPRESSION}, stream ${
        (streamBytes / MiB).toFixed(0)
      } MiB), vs nbdcopy`,
      mbps(size, zstdSeconds),
      mbps(size, ref),
      ref / zstdSeconds,
      0.7,
    ));
    const text = await storedBytesFrom(
      size / 2,
      (sink) => runBackup({ ...job, level: "full", compression: DEFAULT_COMPRESSION }, sink),
    );
    rows.push(atMost(
      "stored bytes of the text half, default compression, vs every record compressed",
      `${(text / 1024).toFixed(1)} KiB`,
      `${(TEXT_HALF_ALL_COMPRESSED / 1024).toFixed(1)} KiB`,
      text / TEXT_HALF_ALL_COMPRESSED,
      1.01,
    ));

    // 1 % of the disk dirty: 1 MiB random writes spread over the disk.
    const dirtyCount = Math.round(size / MiB / 100);
    const blob = join(dir, "blob.bin");
    await Deno.writeFile(blob, fillRandom(new Uint8Array(MiB)));
    const commands: string[] = [];
    for (let i = 0; i < dirtyCount; i++) {
      const offset = Math.floor((i + 0.5) * size / dirtyCount / MiB) * MiB;
      commands.push("-c", `write -s ${blob} ${offset} 1M`);
    }
    await run("qemu-io", ["-f", "raw", ...commands, guest]);
    const dirtyBytes = dirtyCount * MiB;
    const [inc, incSeconds] = await timed(() =>
      runBackup(
        { ...job, level: "incremental", compression: "zstd:3" },
        nullSink,
      )
    );
    const s = inc[0].stats;
    rows.push(
      atMost(
        "incremental 1 % dirty: bytes read / dirty bytes",
        `${(s.dirtyBytes / MiB).toFixed(1)} MiB`,
        `${(dirtyBytes / MiB).toFixed(1)} MiB`,
        s.dirtyBytes / dirtyBytes,
        1.05,
      ),
    );
    rows.push(
      atMost(
        "incremental 1 % dirty: stream bytes / dirty bytes (random data)",
        `${(inc[0].streamBytes / MiB).toFixed(2)} MiB`,
        `${(dirtyBytes / MiB).toFixed(1)} MiB`,
        inc[0].streamBytes / dirtyBytes,
        1.05,
      ),
    );
    rows.push(
      atMost(
        "incremental 1 % dirty: time / full backup time (zstd)",
        `${incSeconds.toFixed(2)} s`,
        `${zstdSeconds.toFixed(2)} s`,
        incSeconds / zstdSeconds,
        0.1,
      ),
    );
  } finally {
    await daemon.quit();
  }
  return rows;
}

/** Peak resident memory of a backup of 1 disk against 3 disks at once, per additional disk. */
export async function benchMemory(dir: string, diskSize = 512 * MiB): Promise<BenchRow[]> {
  const nbdSocket = join(dir, "mem-nbd.sock");
  const disks = [];
  for (let i = 0; i < 3; i++) {
    const image = join(dir, `mem${i}.qcow2`);
    await run("qemu-img", ["create", "-q", "-f", "qcow2", image, String(diskSize)]);
    await run("qemu-io", ["-f", "qcow2", "-c", `write -P ${0x11 + i} 0 ${diskSize}`, image]);
    disks.push({ node: `d${i}`, image });
  }
  const daemon = await StorageDaemon.start({
    disks,
    qmpSocket: join(dir, "mem-qmp.sock"),
    nbdSocket,
  });
  try {
    const peak = async (nodes: string[]) => {
      const outDir = await Deno.makeTempDir({ dir });
      const out = await new Deno.Command("/usr/bin/time", {
        args: [
          "-f",
          "%M",
          Deno.execPath(),
          "run",
          "-A",
          new URL("../../main.ts", import.meta.url).pathname,
          "backup",
          "--qmp",
          daemon.qmpSocket,
          "--nbd-socket",
          nbdSocket,
          "--level",
          "full",
          "--state-dir",
          join(outDir, "state"),
          "--out",
          outDir,
          ...nodes.flatMap((n) => ["--node", n]),
        ],
        stdout: "null",
      }).output();
      const lines = new TextDecoder().decode(out.stderr).trim().split("\n");
      await Deno.remove(outDir, { recursive: true });
      if (!out.success) throw new Error(`backup failed: ${lines.join(" ")}`);
      return Number(lines[lines.length - 1]) * 1024;
    };
    // One peak is one sample of a garbage-collected heap (±5 MiB here): median of three, alternating.
    const ones: number[] = [];
    const threes: number[] = [];
    for (let round = 0; round < 3; round++) {
      ones.push(await peak(["d0"]));
      threes.push(await peak(["d0", "d1", "d2"]));
    }
    const perDisk = (median(threes) - median(ones)) / 2;
    return [atMost(
      "resident memory per additional concurrent disk (zstd:3)",
      `${(perDisk / MiB).toFixed(1)} MiB`,
      "17 MB",
      perDisk / 17e6,
      1.0,
    )];
  } finally {
    await daemon.quit();
  }
}

/**
 * Hash DB lookups per second on a small and a huge disk, in the pattern of a
 * backup: runs of 16 consecutive blocks (1 MiB) at random places, visited in
 * ascending order as dirty extents are. Timed on the
 * second pass, with the pages resident: the first touch of a page of a
 * never-read sparse DB is a page fault, a cost of the OS and not of the lookup.
 */
export function benchHashDb(dir: string): Promise<BenchRow[]> {
  const rate = (diskSize: number) => {
    const db = HashDb.open(join(dir, `hash-${diskSize}.db`), { blockSize: 65536, diskSize });
    try {
      const runs = 100_000;
      const starts = Array.from(
        { length: runs },
        () => Math.floor(Math.random() * (db.blockCount - 16)),
      );
      let sink = 0n;
      let seconds = 0;
      for (let pass = 0; pass < 2; pass++) {
        const t0 = performance.now();
        for (const start of starts) for (let i = 0; i < 16; i++) sink ^= db.get(start + i);
        seconds = (performance.now() - t0) / 1000;
      }
      if (sink === -1n) console.log(sink);
      return (runs * 16) / seconds;
    } finally {
      db.close();
    }
  };
  const small = rate(64 * GiB);
  const huge = rate(4 * 1024 * GiB);
  return Promise.resolve([atLeast(
    "hash DB lookups, 4 TiB disk vs 64 GiB disk (O(1), pages resident)",
    `${(huge / 1e6).toFixed(1)} M/s`,
    `${(small / 1e6).toFixed(1)} M/s`,
    huge / small,
    0.5,
  )]);
}
