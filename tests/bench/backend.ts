/**
 * Backend benchmark (issue 3): a Full backup through `dirtybit backend`, read
 * by the FD emulator as fast as it can, against `dirtybit backup --out
 * /dev/null` of the same disk. Bar: the backend reaches >= 0.9x the direct
 * command's throughput.
 *
 * @module
 */
import { Qsd } from "../fixtures/qsd.ts";
import { backupSession } from "../ptcomm/sessions.ts";

/** One benchmark result; `ratio` = referenceSeconds / dirtybitSeconds (higher is better). */
export interface BackendBenchRow {
  name: string;
  dirtybitSeconds: number;
  referenceSeconds: number;
  ratio: number;
  bar: number;
}

const MiB = 1 << 20;
const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** Measures both paths on one live disk of `sizeMiB` (filled with patterns). */
export async function benchBackend(sizeMiB = 512): Promise<BackendBenchRow[]> {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-bench-backend-" });
  const writes = [];
  for (let off = 0; off < sizeMiB * MiB; off += 16 * MiB) {
    writes.push({ pattern: (off / (16 * MiB)) % 251 + 1, offset: off, length: 16 * MiB });
  }
  const qsd = await Qsd.start({ disks: [{ size: sizeMiB * MiB, writes }] });
  try {
    const disk = qsd.disks[0];
    const t0 = performance.now();
    const direct = await new Deno.Command("deno", {
      args: [
        "run",
        "-A",
        MAIN,
        "backup",
        "--qmp",
        qsd.qmpSocket,
        "--node",
        disk.node,
        "--nbd-socket",
        qsd.nbdSocket,
        "--level",
        "full",
        "--state-dir",
        `${dir}/state-direct`,
        "--out",
        "/dev/null",
      ],
      stdout: "null",
      stderr: "piped",
    }).output();
    const referenceSeconds = (performance.now() - t0) / 1000;
    if (!direct.success) {
      throw new Error(`dirtybit backup failed: ${new TextDecoder().decode(direct.stderr)}`);
    }
    const t1 = performance.now();
    await backupSession(dir, 1, "F", [
      `qmp=${qsd.qmpSocket}`,
      `nbd_socket=${qsd.nbdSocket}`,
      `node=${disk.node}`,
      `state_dir=${dir}/state-backend`,
      `log_file=${dir}/backend.log`,
    ], false);
    const dirtybitSeconds = (performance.now() - t1) / 1000;
    return [{
      name: `full ${sizeMiB} MiB through the PTCOMM backend vs dirtybit backup --out /dev/null`,
      dirtybitSeconds,
      referenceSeconds,
      ratio: referenceSeconds / dirtybitSeconds,
      bar: 0.9,
    }];
  } finally {
    await qsd.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) console.log(await benchBackend(Number(Deno.args[0] ?? 512)));
