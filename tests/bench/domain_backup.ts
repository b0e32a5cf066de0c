/**
 * `backup --domain` against virtnbdbackup (Debian's 1.9.15) on two running
 * libvirt domains (TCG, no guest OS; tests/fixtures/libvirt.ts) with the same
 * data: a 1 GiB qcow2 disk with 384 MiB of random data (one image, copied),
 * then the same 48 MiB of guest writes on both between the full and the
 * incremental. Two domains because virtnbdbackup refuses a domain that has
 * checkpoints of another tool. Per round a full of each, the writes, an
 * incremental of each, then each tool restores its chain into a new qcow2
 * image (the two images compared equal). Both write uncompressed files to a local directory
 * (virtnbdbackup's default; dirtybit with `--compress none`); the times are
 * the wall clock of the whole command, start-up included. The median of 3
 * rounds (a shared 2-core machine).
 *
 * The domain is smaller than the 2 GiB / 1.5 GiB: a 2-core machine
 * shared with other jobs; both tools read the same bytes.
 *
 * Run alone: `deno run -A tests/bench/domain_backup.ts`.
 *
 * @module
 */
import { basename, join } from "node:path";
import { startTestDomain } from "../fixtures/libvirt.ts";
import { dirtybitOk } from "../fixtures/cli.ts";
import { atLeast, type BenchRow } from "./table.ts";
import { median, run, seconds } from "./measure.ts";
import { writeAll } from "../../lib/core/bytes.ts";
import { fillRandom } from "../fixtures/bytes.ts";
import { delay } from "../../lib/core/async.ts";

const MiB = 1 << 20;

/**
 * Rows: full and incremental time of `backup --domain` vs `virtnbdbackup -l
 * full/inc`, and the restore of that chain (`restore --out X.qcow2` vs
 * `virtnbdrestore`, checked equal with `qemu-img compare`).
 */
export async function benchDomainBackup(
  dir: string,
  size = 1024 * MiB,
  data = 384 * MiB,
): Promise<BenchRow[]> {
  const define = (tool: string) =>
    startTestDomain({
      name: `h5-bench-${tool}-${Deno.pid}`,
      disks: [{ target: "vda", format: "qcow2", size }],
      start: false,
    });
  const dom = await define("dirtybit");
  const ref = await define("virtnbdbackup").catch(async (err) => {
    await dom.remove();
    throw err;
  });
  const work = join(dir, "domain-bench");
  await Deno.mkdir(work, { recursive: true });
  // QEMU (another user) reaches the scratch directory inside.
  for (const d of [dir, work]) await Deno.chmod(d, 0o755);
  try {
    const raw = join(work, "data.raw");
    const file = await Deno.open(raw, { write: true, create: true });
    const chunk = new Uint8Array(4 * MiB);
    for (let off = 0; off < data; off += chunk.length) {
      fillRandom(chunk);
      await writeAll(file, chunk);
    }
    file.close();
    await run("qemu-io", ["-f", "qcow2", "-c", `write -s ${raw} 0 ${data}`, dom.disks[0].file]);
    await Deno.remove(raw);
    await run("cp", ["--sparse=always", dom.disks[0].file, ref.disks[0].file]);
    await run("chown", ["libvirt-qemu:", ref.disks[0].file]);
    for (const d of [dom, ref]) await d.virsh(["start", d.name]);

    const times = { full: [] as number[], fullRef: [] as number[], inc: [] as number[] };
    const incRef: number[] = [];
    const restore: number[] = [];
    const restoreRef: number[] = [];
    for (let round = 0; round < 3; round++) {
      const out = join(work, `r${round}`);
      const refOut = join(work, `ref${round}`);
      await Deno.mkdir(out);
      const dirtybit = (level: string) =>
        seconds(() =>
          dirtybitOk([
            "backup",
            "--domain",
            dom.name,
            "--level",
            level,
            "--state-dir",
            join(work, "state"),
            "--out",
            out,
            "--scratch-dir",
            join(work, "scratch"),
            "--compress",
            "none",
          ])
        );
      const virtnbdbackup = (level: string) =>
        seconds(() => run("virtnbdbackup", ["-d", ref.name, "-l", level, "-o", refOut]));
      times.full.push(await dirtybit("full"));
      times.fullRef.push(await virtnbdbackup("full"));
      for (let i = 0; i < 3; i++) {
        for (const d of [dom, ref]) {
          await d.guestWrite("vda", 0x40 + round, (500 + 100 * i + round * 16) * MiB, 16 * MiB);
        }
      }
      times.inc.push(await dirtybit("incremental"));
      incRef.push(await virtnbdbackup("inc"));
      // The chain (full + incremental) into a new qcow2 image by each tool.
      const streams = (await Array.fromAsync(Deno.readDir(out))).map((e) => e.name)
        .filter((n) => n.endsWith(".dbit")).sort((a, b) =>
          Number(b.includes("-full-")) - Number(a.includes("-full-"))
        ).map((n) => join(out, n));
      const image = join(work, `restored${round}.qcow2`);
      const refRestored = join(work, `ref-restored${round}`);
      restore.push(await seconds(() => dirtybitOk(["restore", "--out", image, ...streams])));
      restoreRef.push(
        await seconds(() => run("virtnbdrestore", ["-n", "-i", refOut, "-o", refRestored])),
      );
      // Same data: both restored the same disk. virtnbdrestore exits before
      // its qemu-nbd has let go of the image: wait for the lock.
      for (let attempt = 0;; attempt++) {
        try {
          await run("qemu-img", [
            "compare",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            image,
            join(refRestored, basename(ref.disks[0].file)),
          ]);
          break;
        } catch (err) {
          if (attempt >= 50 || !/lock/.test((err as Error).message)) throw err;
          await delay(100);
        }
      }
      await Deno.remove(image);
      await Deno.remove(refRestored, { recursive: true });
      await Deno.remove(out, { recursive: true });
      await Deno.remove(refOut, { recursive: true });
    }
    const row = (name: string, mine: number[], theirs: number[], tool = "virtnbdbackup") => {
      const [m, r] = [median(mine), median(theirs)];
      const range = (xs: number[]) =>
        `${Math.min(...xs).toFixed(2)}-${Math.max(...xs).toFixed(2)} s`;
      return atLeast(
        name,
        `${m.toFixed(2)} s (${range(mine)})`,
        `${tool} ${r.toFixed(2)} s (${range(theirs)})`,
        r / m,
        name.startsWith("backup --domain incremental") ? 2.0 : 1.0,
      );
    };
    return [
      row(
        `backup --domain full, 1 GiB disk with ${data / MiB} MiB random (TCG), time`,
        times.full,
        times.fullRef,
      ),
      row("backup --domain incremental, 48 MiB written, time", times.inc, incRef),
      row(
        "restore of that full + incremental to qcow2, time",
        restore,
        restoreRef,
        "virtnbdrestore",
      ),
    ];
  } finally {
    await dom.remove();
    await ref.remove();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const { renderTable } = await import("./table.ts");
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-bench-" });
  try {
    console.log(renderTable(await benchDomainBackup(dir)));
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
