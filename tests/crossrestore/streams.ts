/**
 * Backup chains for cross-restore tests, written with the real StreamWriter
 * (a full and one incremental per disk), and the reference restore of a chain
 * through `dirtybit restore --out X.raw STREAMS`.
 *
 * @module
 */
import { restoreCommand } from "../../lib/cli/restore.ts";
import type { StreamHeaderInit } from "../../lib/stream/format.ts";
import { StreamWriter } from "../../lib/stream/writer.ts";
import { pseudoRandom } from "../fixtures/bytes.ts";
import { run } from "../helpers.ts";

const MiB = 1 << 20;

async function writeStream(
  path: string,
  header: StreamHeaderInit,
  parts: { offset: number; data?: Uint8Array; zero?: number }[],
): Promise<void> {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  const w = new StreamWriter(file.writable, header, { workers: 1 });
  for (const p of parts) {
    if (p.data) await w.writeData(p.offset, p.data);
    else await w.writeZero(p.offset, p.zero!);
  }
  await w.finish();
}

/**
 * Writes `DIR/<disk>.full.dbit` and `DIR/<disk>.inc1.dbit` for a disk of
 * `size` bytes (data, a zero gap, data; then the incremental overwrites a
 * range). `metadata` goes into both headers. Returns the paths in chain order.
 */
export async function writeChain(
  dir: string,
  disk: string,
  size: number,
  seed: number,
  metadata?: Record<string, unknown>,
): Promise<string[]> {
  const base = {
    disk,
    virtualSize: size,
    blockSize: 65536,
    chainId: `chain-${disk}`,
    checkpoint: "",
    compression: "zstd:1" as const,
    ...(metadata ? { metadata } : {}),
  };
  const full = `${dir}/${disk}.full.dbit`;
  const inc = `${dir}/${disk}.inc1.dbit`;
  const half = Math.floor(size / 2 / MiB) * MiB;
  await writeStream(full, { ...base, level: "full", backupId: `${disk}-F`, parentId: null }, [
    { offset: 0, data: pseudoRandom(MiB, seed) },
    { offset: MiB, zero: half - MiB },
    { offset: half, data: pseudoRandom(size - half, seed + 1) },
  ]);
  await writeStream(inc, {
    ...base,
    level: "incremental",
    backupId: `${disk}-I1`,
    parentId: `${disk}-F`,
  }, [
    { offset: 64 * 1024, data: pseudoRandom(256 * 1024, seed + 2) },
  ]);
  return [full, inc];
}

/** The chain restored by the plain `dirtybit restore` to a raw file. */
export async function referenceRestore(out: string, streams: string[]): Promise<void> {
  const code = await restoreCommand.run(["--out", out, ...streams]);
  if (code !== 0) throw new Error(`reference restore exited ${code}`);
}

/** `qemu-img check` passes and `qemu-img compare` finds the image equal to the raw reference. */
export async function assertSameDisk(
  image: string,
  format: string,
  reference: string,
): Promise<void> {
  if (format !== "raw" && format !== "vmdk-flat") {
    await run("qemu-img", ["check", "-f", format, image]);
  }
  const f = format === "vmdk-flat" ? "vmdk" : format;
  await run("qemu-img", ["compare", "-f", f, "-F", "raw", image, reference]);
}
