/**
 * Backend benchmark (issue 3): a Full backup through `dirtybit backend`, read
 * by the FD emulator as fast as it can, against `dirtybit backup --out
 * /dev/null` of the same live disk. The disk holds incompressible data, so
 * both paths move every byte. Each is run three times, alternating, and the best
 * time counts. Bar: the backend reaches >= 0.9x the direct command's throughput.
 *
 * @module
 */
import { join } from "node:path";
import { StorageDaemon } from "../../lib/qemu/storage_daemon.ts";
import { backupSession } from "../ptcomm/sessions.ts";
import { atLeast, type BenchRow, mbps } from "./table.ts";
import { randomQcow2, run, seconds } from "./measure.ts";

const MiB = 1 << 20;
const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** Full through the PTCOMM backend vs `dirtybit backup --out /dev/null`, on a random 512 MiB disk. */
export async function benchBackend(dir: string, size = 512 * MiB): Promise<BenchRow[]> {
  const work = await Deno.makeTempDir({ dir, prefix: "backend-" });
  const nbdSocket = join(work, "nbd.sock");
  const image = join(work, "backend-random.qcow2");
  await randomQcow2(image, size);
  const daemon = await StorageDaemon.start({
    disks: [{ node: "vda", image }],
    qmpSocket: join(work, "qmp.sock"),
    nbdSocket,
  });
  try {
    const source = ["--qmp", daemon.qmpSocket, "--node", "vda", "--nbd-socket", nbdSocket];
    const direct = (round: number) =>
      run(Deno.execPath(), [
        "run",
        "-A",
        MAIN,
        "backup",
        ...source,
        "--level",
        "full",
        "--state-dir",
        join(work, `state-direct-${round}`),
        "--out",
        "/dev/null",
      ]);
    const backend = (round: number) =>
      backupSession(work, round + 1, "F", [
        `qmp=${daemon.qmpSocket}`,
        `nbd_socket=${nbdSocket}`,
        "node=vda",
        `state_dir=${join(work, `state-backend-${round}`)}`,
        `log_file=${join(work, "backend.log")}`,
      ], false);
    const directRuns: number[] = [];
    const backendRuns: number[] = [];
    for (let round = 0; round < 3; round++) {
      directRuns.push(await seconds(() => direct(round)));
      backendRuns.push(await seconds(() => backend(round)));
    }
    const d = Math.min(...directRuns);
    const b = Math.min(...backendRuns);
    return [
      atLeast(
        `full backup of ${size / MiB} MiB random data: PTCOMM backend vs backup --out /dev/null`,
        mbps(size, b),
        mbps(size, d),
        d / b,
        0.9,
      ),
    ];
  } finally {
    await daemon.quit();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-bench-" });
  try {
    console.log(await benchBackend(dir));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
