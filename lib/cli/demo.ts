/**
 * `dirtybit demo`: the main job on an embedded default, no cloud needed. A
 * local qcow2 disk served by qemu-storage-daemon stands in for a VM: full
 * backup, guest writes, incremental, restore of the chain, and a bit-for-bit
 * comparison with the source by `qemu-img compare`.
 *
 * @module
 */
import { join } from "node:path";
import type { Command } from "./command.ts";
import { parseFlags } from "./args.ts";
import { StorageDaemon } from "../qemu/storage_daemon.ts";
import { runBackup } from "../backup/engine.ts";
import type { DiskBackupResult } from "../backup/plan.ts";
import { RestoreSession } from "../restore/session.ts";
import { openStreamFile } from "../stream/reader.ts";
import { SourceError, TargetError, UsageError } from "../core/errors.ts";
import { formatBytes } from "../core/bytes.ts";
import { openFileSink } from "../sinks/file.ts";
import { DEFAULT_COMPRESSION } from "../stream/compression.ts";
import { helperCommand, type HelperProgram, startError } from "../core/process.ts";

const HELP = `
usage: dirtybit demo [--size MiB] [--dir DIR] [--keep]

Runs a full backup, guest writes, an incremental backup and a restore of the
chain on a local qcow2 disk served by qemu-storage-daemon, then compares the
restored image with the source using qemu-img compare.

  --size MiB   virtual disk size (default 256)
  --dir DIR    work directory (default: a new temporary directory)
  --keep       keep the work directory (streams, state, images)
`;

const MiB = 1 << 20;

export const demoCommand: Command = {
  name: "demo",
  summary: "full + incremental backup and restore of a local QEMU disk, compared bit for bit",
  async run(args) {
    const parsed = parseFlags(
      "demo",
      args,
      {
        size: { type: "string" },
        dir: { type: "string", path: true },
        keep: { type: "boolean" },
      },
      HELP,
    );
    if (!parsed) return 0;
    const sizeMiB = Number(parsed.values.size ?? "256");
    if (!Number.isInteger(sizeMiB) || sizeMiB < 128 || sizeMiB > 65536) {
      throw new UsageError("demo: --size must be a whole number of MiB from 128 to 65536");
    }
    const dir = parsed.values.dir ?? await Deno.makeTempDir({ prefix: "dirtybit-demo-" });
    await Deno.mkdir(dir, { recursive: true });
    try {
      return await runDemo(dir, sizeMiB * MiB);
    } finally {
      if (!parsed.values.keep) await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
};

async function runDemo(dir: string, size: number): Promise<number> {
  const image = join(dir, "vm-disk.qcow2");
  const nbdSocket = join(dir, "nbd.sock");
  const guestUri = `nbd+unix:///guest?socket=${nbdSocket}`;
  step(`creating a ${formatBytes(size)} qcow2 disk with 48 MiB of data`);
  await tool("qemu-img", ["create", "-q", "-f", "qcow2", image, String(size)]);
  const random = join(dir, "random.bin");
  await Deno.writeFile(random, randomBytes(32 * MiB));
  await tool("qemu-io", ["-f", "qcow2", "-c", `write -s ${random} 0 32M`, image]);
  await tool("qemu-io", ["-f", "qcow2", "-c", "write -P 0x5a 64M 16M", image]);

  const daemon = await StorageDaemon.start({
    disks: [{ node: "vda", image, exportName: "guest" }],
    qmpSocket: join(dir, "qmp.sock"),
    nbdSocket,
  });
  const results: { what: string; r: DiskBackupResult; seconds: number; file: string }[] = [];
  try {
    const job = {
      qmp: daemon.qmpSocket,
      nbdSocket,
      nodes: ["vda"],
      stateDir: join(dir, "state"),
      compression: DEFAULT_COMPRESSION,
    };
    const backup = async (what: string, level: "full" | "incremental") => {
      const file = join(dir, `${what}.dbit`);
      const t0 = performance.now();
      const [r] = await runBackup(
        { ...job, level },
        (_disk, run) => openFileSink(file, run),
      );
      results.push({ what, r, seconds: (performance.now() - t0) / 1000, file });
      step(`${what} backup ${r.backupId}: ${formatBytes(r.streamBytes)} stream`);
    };
    step("full backup");
    await backup("full", "full");

    step("guest writes: 4 MiB new data, 1 MiB identical rewrite, 2 MiB of zeros");
    await Deno.writeFile(random, randomBytes(4 * MiB));
    await tool("qemu-io", ["-f", "raw", "-c", `write -s ${random} 100M 4M`, guestUri]);
    await tool("qemu-io", ["-f", "raw", "-c", "write -P 0x5a 64M 1M", guestUri]);
    await tool("qemu-io", ["-f", "raw", "-c", "write -z 8M 2M", guestUri]);

    step("incremental backup");
    await backup("incremental", "incremental");
    step("copying the source as it is now, for the comparison");
    await tool("qemu-img", [
      "convert",
      "-f",
      "raw",
      "-O",
      "raw",
      guestUri,
      join(dir, "source.raw"),
    ]);
  } finally {
    await daemon.quit();
  }

  step("restoring full + incremental into restored.qcow2");
  const restored = join(dir, "restored.qcow2");
  const t0 = performance.now();
  const session = await RestoreSession.open({ path: restored, format: "qcow2" });
  for (const { file } of results) await session.applyReader(await openStreamFile(file));
  await session.close();
  const restoreSeconds = (performance.now() - t0) / 1000;
  const compare = await helperCommand("qemu-img", {
    args: ["compare", "-q", "-f", "raw", "-F", "qcow2", join(dir, "source.raw"), restored],
  }).output();
  const identical = compare.code === 0;

  console.log("\ndirtybit demo summary");
  console.log(
    "backup       level        dirty      L2 unchanged  L3 zero   stored     stream     time",
  );
  for (const { what, r, seconds } of results) {
    const s = r.stats;
    console.log(
      `${what.padEnd(12)} ${r.level.padEnd(12)} ${col(s.dirtyBytes)} ${
        col(s.unchangedBytes, 13)
      } ` +
        `${col(s.zeroBytes, 9)} ${col(s.dataBytes)} ${col(r.streamBytes)} ${seconds.toFixed(2)} s`,
    );
  }
  console.log(`restore      full+incremental into qcow2 in ${restoreSeconds.toFixed(2)} s`);
  console.log(
    identical
      ? "qemu-img compare: restored disk is identical to the source"
      : "qemu-img compare: restored disk DIFFERS from the source",
  );
  if (!identical) throw new TargetError("demo: the restored disk differs from the source");
  return 0;
}

function col(n: number, width = 10): string {
  return formatBytes(n).padEnd(width);
}

function step(text: string): void {
  console.log(`- ${text}`);
}

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) crypto.getRandomValues(out.subarray(off, off + 65536));
  return out;
}

async function tool(program: HelperProgram, args: string[]): Promise<void> {
  let out: Deno.CommandOutput;
  try {
    out = await helperCommand(program, { args, stdin: "null" }).output();
  } catch (err) {
    throw startError(program, err);
  }
  const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
  if (!out.success || /error|failed/i.test(text)) {
    throw new SourceError(`demo: ${program} ${args[0]} failed: ${text.trim().split("\n")[0]}`);
  }
}
