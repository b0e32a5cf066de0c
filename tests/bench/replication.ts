/**
 * Replication benchmarks: bytes on the wire against compressed dirty bytes
 * for a cycle with 1 % of a 1 GiB disk dirty (real qemu-storage-daemon,
 * in-process receiver), and the secure channel's throughput against plain
 * loopback TCP. Run alone: `deno run -A tests/bench/replication.ts`.
 *
 * @module
 */
import { join } from "node:path";
import { NbdClient } from "../../lib/nbd/client.ts";
import { SecureChannel } from "../../lib/replication/channel.ts";
import { Receiver } from "../../lib/replication/receiver.ts";
import { pushCycle, type ReplicatedDisk, seedDisk } from "../../lib/replication/sender.ts";
import { ReplicaStore } from "../../lib/replication/store.ts";
import { Qsd } from "../fixtures/qsd.ts";

/** One benchmark result. */
export interface ReplicationBenchRow {
  name: string;
  dirtybitSeconds?: number;
  referenceSeconds?: number;
  ratio: number;
  bar: string;
  ok: boolean;
}

const PSK = "benchmark pre-shared key, 32 characters or more";
const WIRE_CONSTANT = 64 << 10;

/** Runs both benchmarks. */
export async function benchReplication(diskSize = 1 << 30): Promise<ReplicationBenchRow[]> {
  return [...await benchCycle(diskSize), await benchChannel(128 << 20)];
}

async function benchCycle(diskSize: number): Promise<ReplicationBenchRow[]> {
  const qsd = await Qsd.start({ disks: [{ size: diskSize }] });
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-bench-repl-" });
  const { store } = await ReplicaStore.open(join(dir, "dr"), { format: "raw" });
  const receiver = Receiver.start({
    hostname: "127.0.0.1",
    port: 0,
    psk: PSK,
    store,
    log: () => {},
  });
  const qmp = await qsd.qmp();
  try {
    const disk: ReplicatedDisk = {
      qmp,
      node: qsd.disks[0].node,
      name: "bench",
      stateDir: join(dir, "state"),
      workDir: dir,
      nbdSocket: qsd.nbdSocket,
    };
    const target = {
      host: "127.0.0.1",
      port: receiver.port,
      psk: PSK,
      retry: { count: 0, delayMs: 0, jitterMs: 0 },
    };
    await seedDisk(disk, target);
    // 1 % of the disk in 1 MiB writes spread over it; half of each 4 KiB
    // block random, half zeros: compressible about 2:1, like real data.
    const dirty = Math.floor(diskSize / 100 / (1 << 20));
    const client = await NbdClient.connect({ uri: qsd.disks[0].uri });
    const buf = new Uint8Array(1 << 20);
    for (let i = 0; i < dirty; i++) {
      buf.fill(0);
      for (let off = 0; off < buf.length; off += 4096) {
        crypto.getRandomValues(buf.subarray(off, off + 2048));
      }
      await client.pwrite(buf, Math.floor(i * diskSize / dirty / (1 << 20)) * (1 << 20));
    }
    await client.flush();
    await client.close();
    const r = await pushCycle(disk, target);
    const ratio = r.stats.wireBytes / (r.stats.payloadBytes + WIRE_CONSTANT);
    return [
      {
        name: `cycle, ${dirty} MiB of ${diskSize >> 20} MiB dirty: wire / (compressed + 64 KiB)`,
        dirtybitSeconds: r.seconds,
        ratio,
        bar: "<= 1.02",
        ok: ratio <= 1.02,
      },
      {
        name:
          `cycle wire bytes ${r.stats.wireBytes}, compressed ${r.stats.payloadBytes}, dirty ${r.stats.dirtyBytes}`,
        ratio: r.stats.wireBytes / r.stats.payloadBytes,
        bar: "info",
        ok: true,
      },
    ];
  } finally {
    await qmp.close();
    await receiver.stop();
    await qsd.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

async function benchChannel(bytes: number): Promise<ReplicationBenchRow> {
  const chunk = new Uint8Array(1 << 20);
  crypto.getRandomValues(chunk.subarray(0, 65536));
  const raw = await timeRawTcp(bytes, chunk);
  const secure = await timeChannel(bytes, chunk);
  return {
    name: `channel throughput, ${bytes >> 20} MiB: ${
      (bytes / secure / 1e6).toFixed(0)
    } MB/s vs raw TCP ${(bytes / raw / 1e6).toFixed(0)} MB/s`,
    dirtybitSeconds: secure,
    referenceSeconds: raw,
    ratio: raw / secure,
    bar: "info (AES-GCM bound)",
    ok: true,
  };
}

async function timeRawTcp(bytes: number, chunk: Uint8Array): Promise<number> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const sink = (async () => {
    const conn = await listener.accept();
    const buf = new Uint8Array(1 << 16);
    while ((await conn.read(buf)) !== null) { /* drain */ }
    conn.close();
  })();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const started = performance.now();
  for (let sent = 0; sent < bytes; sent += chunk.length) {
    for (let off = 0; off < chunk.length;) off += await conn.write(chunk.subarray(off));
  }
  conn.close();
  await sink;
  listener.close();
  return (performance.now() - started) / 1000;
}

async function timeChannel(bytes: number, chunk: Uint8Array): Promise<number> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const sink = (async () => {
    const channel = await SecureChannel.accept(await listener.accept(), { psk: PSK });
    while ((await channel.receive()).type !== "close") { /* drain */ }
    channel.close();
  })();
  const channel = await SecureChannel.connect("127.0.0.1", listener.addr.port, { psk: PSK });
  const started = performance.now();
  for (let sent = 0; sent < bytes; sent += chunk.length) {
    await channel.send({
      type: "data",
      offset: sent,
      length: chunk.length,
      codec: "raw",
      payload: chunk,
    });
  }
  await channel.send({ type: "close" });
  await sink;
  const seconds = (performance.now() - started) / 1000;
  channel.close();
  listener.close();
  return seconds;
}

if (import.meta.main) {
  for (const row of await benchReplication()) console.log(JSON.stringify(row));
}
