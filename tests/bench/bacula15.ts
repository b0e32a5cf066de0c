/**
 * The real plugin's throughput: a Full job of a disk of random data through
 * cloudstack-fd.so and `dirtybit backend` in Bacula 15 (`make bacula15`),
 * against the same Bacula backing up a plain file of the same size and
 * content to the same storage. Each is run three times, alternating; the
 * best wall-clock time of `run job=... yes` to the job's end counts, and the
 * range is shown. Bar: the plugin reaches >= 0.9x the plain file's rate
 * (Bacula's FD-to-SD path is the limit of both).
 *
 * @module
 */
import { join } from "node:path";
import { StorageDaemon } from "../../lib/qemu/storage_daemon.ts";
import { BaculaLab, isGood } from "../bacula/harness.ts";
import { bacula15, bacula15Missing, prepareBacula15 } from "../bacula/bacula15.ts";
import { atLeast, type BenchRow, mbps } from "./table.ts";
import { randomQcow2, seconds } from "./measure.ts";

const MiB = 1 << 20;

/** Plugin Full vs plain-file Full of `size` bytes of random data, in the same Bacula 15. */
export async function benchBacula15(size = 1024 * MiB): Promise<BenchRow[]> {
  const missing = bacula15Missing();
  if (missing.length > 0) throw new Error(`Bacula 15 is not built (${missing[0]}): make bacula15`);
  const { dir, bin, plugins } = await prepareBacula15();
  const image = join(dir, "random.qcow2");
  await randomQcow2(image, size, true);
  const nbdSocket = join(dir, "nbd.sock");
  const daemon = await StorageDaemon.start({
    disks: [{ node: "vda", image }],
    qmpSocket: join(dir, "qmp.sock"),
    nbdSocket,
  });
  let lab: BaculaLab | undefined;
  try {
    lab = await BaculaLab.start(bacula15(bin, plugins), [
      {
        name: "Plugin",
        plugin: `cloudstack: vm=bench qmp=${daemon.qmpSocket} nbd_socket=${nbdSocket} node=vda`,
      },
      { name: "File", file: `${image}.raw` },
    ], dir);
    const l = lab;
    const full = (job: string) =>
      seconds(async () => {
        const r = await l.backup(job, "Full");
        if (!isGood(r)) throw new Error(`${job} full: ${JSON.stringify(r).slice(0, 600)}`);
      });
    const pluginRuns: number[] = [];
    const fileRuns: number[] = [];
    for (let round = 0; round < 3; round++) {
      pluginRuns.push(await full("Plugin"));
      fileRuns.push(await full("File"));
    }
    const range = (runs: number[]) =>
      `${mbps(size, Math.max(...runs))}-${mbps(size, Math.min(...runs))}`.replaceAll(" MB/s", "") +
      " MB/s";
    const p = Math.min(...pluginRuns);
    const f = Math.min(...fileRuns);
    return [
      atLeast(
        `Bacula 15 Full job of a ${size / MiB} MiB random disk: cloudstack plugin vs a plain file`,
        `${mbps(size, p)} (${range(pluginRuns)})`,
        `${mbps(size, f)} (${range(fileRuns)})`,
        f / p,
        0.9,
      ),
    ];
  } finally {
    await lab?.stop();
    await daemon.quit();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) console.log(await benchBacula15());
