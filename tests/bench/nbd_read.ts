/**
 * Throughput self-check of the NBD read path (not a test): reads a whole
 * export with `readExtents` over 2 connections (2 MiB requests, 4 in flight)
 * and touches nothing but the byte count.
 *
 * `deno run -A tests/bench/nbd_read.ts [SIZE_MIB]` serves a raw image of
 * SIZE_MIB (default 1024) filled with data through qemu-nbd, runs the bench 3
 * times and prints MB/s next to `nbdcopy URI null:` on the same export.
 *
 * @module
 */
import { NbdClient } from "../../lib/nbd/client.ts";
import { readExtents } from "../../lib/nbd/reader.ts";

/** Reads `[0, size)` of `uri` with readExtents over 2 connections; returns bytes and wall time. */
export async function benchNbdRead(
  uri: string,
  size: number,
): Promise<{ bytes: number; seconds: number }> {
  const clients = await Promise.all([0, 1].map(() => NbdClient.connect({ uri })));
  try {
    const t0 = performance.now();
    let bytes = 0;
    for await (const { data } of readExtents(clients, [{ offset: 0, length: size }])) {
      bytes += data.length;
    }
    return { bytes, seconds: (performance.now() - t0) / 1000 };
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
}

async function nbdcopySeconds(uri: string): Promise<number | undefined> {
  const t0 = performance.now();
  try {
    const out = await new Deno.Command("nbdcopy", { args: [uri, "null:"], stderr: "null" })
      .output();
    return out.success ? (performance.now() - t0) / 1000 : undefined;
  } catch {
    return undefined;
  }
}

if (import.meta.main) {
  const { startQemuNbd } = await import("../fixtures/qemu_nbd.ts");
  const size = Number(Deno.args[0] ?? 1024) * 1024 * 1024;
  const srv = await startQemuNbd({
    size,
    format: "raw",
    writes: [{ offset: 0, length: size, pattern: 0x5a }],
  });
  try {
    const mbs = (b: number, s: number) => (b / s / 1e6).toFixed(0);
    for (let round = 0; round < 3; round++) {
      const r = await benchNbdRead(srv.uri, size);
      const nc = await nbdcopySeconds(srv.uri);
      console.log(
        `round ${round + 1}: readExtents x2 conns ${mbs(r.bytes, r.seconds)} MB/s` +
          (nc ? `, nbdcopy ${mbs(size, nc)} MB/s` : ""),
      );
    }
  } finally {
    await srv.stop();
  }
}
