/**
 * Full backup throughput of a VM read on its KVM host (issue 4), in the
 * `ssh_tunnel` and `direct` access modes, against `nbdcopy` reading an
 * export of the same disk over the same path, and against `nbdcopy` through
 * a plain OpenSSH `ssh -N -L` with its default cipher (what an operator
 * would set up by hand).
 *
 * The "VM" is a qemu-storage-daemon behind the loopback sshd (the "host"),
 * not a libvirt domain: a TCG domain takes ~36 s to start here, and the data
 * path under test (QEMU's NBD server -> tunnel or TCP -> dirtybit) is the
 * same; the rows say so. The engine runs with the tunnel of
 * lib/backup/access_ssh_tunnel.ts, or (direct) reads QEMU's NBD server on a TCP port
 * as libvirt's TCP pull backup serves it, compression off, into a null sink;
 * the median of 5 rounds (shared 2-core machine: single runs move ±15 %).
 * A backup opens its SSH tunnel as part of the job, so each reference's time
 * includes opening its tunnel too (about 0.16 s here); the NBD export it
 * reads is set up untimed.
 *
 * Run alone: `deno run -A tests/bench/vm_backup.ts`.
 *
 * @module
 */
import { join } from "node:path";
import { StorageDaemon } from "../../lib/qemu/storage_daemon.ts";
import { QmpSocket } from "../../lib/qemu/qmp.ts";
import { runBackup } from "../../lib/backup/engine.ts";
import type { DataPath } from "../../lib/backup/access_mode.ts";
import { tunnelDataPath } from "../../lib/backup/access_ssh_tunnel.ts";
import { SshHost, type SshTunnel } from "../../lib/hosts/ssh.ts";
import { plainForward, startSshd } from "../fixtures/sshd.ts";
import { atLeast, type BenchRow, mbps } from "./table.ts";
import { median, nullSink, randomQcow2, run, seconds } from "./measure.ts";
import { tuneMalloc } from "../../ffi/libc.ts";
import { delay } from "../../lib/core/async.ts";
import { freePort } from "../helpers.ts";

const MiB = 1 << 20;

/** Rows: ssh_tunnel and direct full backups vs nbdcopy on the same path, and vs plain ssh -L. */
export async function benchVmBackup(dir: string, size = 2048 * MiB): Promise<BenchRow[]> {
  const image = join(dir, "vm-disk.qcow2");
  await randomQcow2(image, size);
  const sshd = await startSshd();
  const qsd = await StorageDaemon.start({
    disks: [{ node: "vda", image }],
    qmpSocket: join(dir, "vm-qmp.sock"),
  });
  const qmp = await QmpSocket.connect(qsd.qmpSocket);
  const host = await SshHost.connect({
    host: sshd.host,
    port: sshd.port,
    user: sshd.user,
    keyPath: sshd.keyPath,
    knownHostsPath: sshd.knownHostsPath,
  });
  const rows: BenchRow[] = [];
  const scratch = join(dir, "vm-scratch");
  await Deno.mkdir(scratch, { recursive: true });
  try {
    /** nbdcopy of a read-only export of vda served on `mode`'s path. */
    const nbdcopyOver = async (mode: "ssh_tunnel" | "direct" | "plain") => {
      const port = freePort();
      const socket = join(scratch, "ref.sock");
      await qmp.execute("nbd-server-start", {
        addr: mode === "direct"
          ? { type: "inet", data: { host: "127.0.0.1", port: String(port) } }
          : { type: "unix", data: { path: socket } },
      });
      await qmp.execute("block-export-add", {
        type: "nbd",
        id: "ref",
        "node-name": "vda",
        name: "ref",
      });
      try {
        if (mode === "direct") {
          return await seconds(() => run("nbdcopy", [`nbd://127.0.0.1:${port}/ref`, "null:"]));
        }
        if (mode === "plain") {
          const local = join(scratch, "plain.sock");
          let child: Deno.ChildProcess | undefined;
          try {
            return await seconds(async () => {
              child = await plainForward(sshd, local, socket);
              await run("nbdcopy", [`nbd+unix:///ref?socket=${local}`, "null:"]);
            });
          } finally {
            child?.kill("SIGTERM");
            await child?.status;
            await Deno.remove(local).catch(() => {});
          }
        }
        let tunnel: SshTunnel | undefined;
        try {
          return await seconds(async () => {
            tunnel = await host.openTunnel({ socket });
            await run("nbdcopy", [tunnel.nbdUri("ref"), "null:"]);
          });
        } finally {
          await tunnel?.close();
        }
      } finally {
        await qmp.execute("block-export-del", { id: "ref", mode: "hard" });
        while ((await qmp.execute<unknown[]>("query-block-exports")).length > 0) {
          await delay(10);
        }
        await qmp.execute("nbd-server-stop");
      }
    };
    /** The direct path: QEMU's NBD server on a TCP port, which the point in time uses. */
    const directPath = async (): Promise<DataPath & { job: { nbdSocket: string } }> => {
      const port = freePort();
      await qmp.execute("nbd-server-start", {
        addr: { type: "inet", data: { host: "127.0.0.1", port: String(port) } },
      });
      return {
        job: {
          nbdSocket: `${scratch}/tcp-${port}`,
          reachExport: (uri) =>
            Promise.resolve(`nbd://127.0.0.1:${port}/${new URL(uri).pathname.slice(1)}`),
        },
        close: async () => void await qmp.execute("nbd-server-stop"),
      };
    };
    const backupOver = async (mode: "ssh_tunnel" | "direct") => {
      const path = mode === "direct" ? await directPath() : tunnelDataPath(host);
      try {
        return await seconds(() =>
          runBackup({
            ...path.job,
            qmp,
            nodes: ["vda"],
            level: "full",
            stateDir: join(dir, `vm-state-${mode}`),
            compression: "none",
            workDir: scratch,
          }, nullSink)
        );
      } finally {
        await path.close();
      }
    };
    await nbdcopyOver("ssh_tunnel"); // warm the page cache
    const times: Record<string, number[]> = {
      tunnel: [],
      tunnelRef: [],
      direct: [],
      directRef: [],
      plain: [],
    };
    for (let round = 0; round < 5; round++) {
      times.tunnelRef.push(await nbdcopyOver("ssh_tunnel"));
      times.tunnel.push(await backupOver("ssh_tunnel"));
      times.directRef.push(await nbdcopyOver("direct"));
      times.direct.push(await backupOver("direct"));
      times.plain.push(await nbdcopyOver("plain"));
    }
    const m = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
    const mib = `${size / MiB} MiB`;
    rows.push(
      atLeast(
        `VM full backup ${mib}, ssh_tunnel (QSD behind loopback sshd, not libvirt), vs nbdcopy through the same tunnel`,
        mbps(size, m.tunnel),
        mbps(size, m.tunnelRef),
        m.tunnelRef / m.tunnel,
        0.9,
      ),
      atLeast(
        `VM full backup ${mib}, direct NBD over TCP (QSD, not libvirt), vs nbdcopy on the same port`,
        mbps(size, m.direct),
        mbps(size, m.directRef),
        m.directRef / m.direct,
        0.9,
      ),
      atLeast(
        `VM full backup ${mib}, ssh_tunnel (AES-GCM) vs nbdcopy through a plain OpenSSH ssh -L (default cipher)`,
        mbps(size, m.tunnel),
        mbps(size, m.plain),
        m.plain / m.tunnel,
        0.9,
      ),
    );
  } finally {
    await host.close();
    await qmp.close();
    await qsd.quit();
    await sshd.stop();
    await Deno.remove(image).catch(() => {});
    await Deno.remove(scratch, { recursive: true }).catch(() => {});
  }
  return rows;
}

if (import.meta.main) {
  tuneMalloc();
  const { renderTable } = await import("./table.ts");
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-bench-vm-" });
  try {
    console.log(renderTable(await benchVmBackup(dir)));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
