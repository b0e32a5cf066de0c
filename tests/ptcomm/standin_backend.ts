/**
 * TEST ONLY: `dirtybit backend`'s process glue with a stand-in engine, for
 * protocol tests that need no QEMU (malformed input, cancel, chain refusal).
 * Streams are `{"id","parent","level","disk"}\n` + a deterministic payload;
 * STANDIN_BYTES sets the payload size and STANDIN_SLOW_MS a pause per 64 KiB
 * (to cancel in the middle). A cancelled backup writes `cancel-cleanup` in
 * the state dir, as the real engine merges its bitmaps back.
 *
 * @module
 */
import { serveBackend } from "../../lib/bacula/serve.ts";
import type { BackendEngine, EngineJob } from "../../lib/bacula/engine_port.ts";
import type { DiskBackupResult } from "../../lib/backup/plan.ts";
import { CancelledError, ChainError, InputError } from "../../lib/core/errors.ts";
import { delay } from "../../lib/core/async.ts";

const payloadBytes = Number(Deno.env.get("STANDIN_BYTES") ?? 3 << 20);
const slowMs = Number(Deno.env.get("STANDIN_SLOW_MS") ?? 0);
const enc = new TextEncoder();

/** The payload of a backup: depends on disk and id, so a wrong order shows. */
export function standinPayload(disk: string, id: string, size = payloadBytes): Uint8Array {
  const seed = [...`${disk}/${id}`].reduce((s, c) => (s * 31 + c.charCodeAt(0)) >>> 0, 7);
  const out = new Uint8Array(size);
  let x = seed || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

async function readState(dir: string): Promise<Record<string, string>> {
  try {
    return JSON.parse(await Deno.readTextFile(`${dir}/standin.json`));
  } catch {
    return {};
  }
}

const engine: BackendEngine = {
  async runBackup(job: EngineJob, sinkFor): Promise<DiskBackupResult[]> {
    await Deno.mkdir(job.stateDir, { recursive: true });
    const state = await readState(job.stateDir);
    const results: DiskBackupResult[] = [];
    for (const node of job.nodes) {
      const parent = state[node] ?? null;
      const wanted = job.level === "auto" ? (parent ? "incremental" : "full") : job.level;
      const level = wanted !== "full" && !parent ? "full" : wanted;
      const id = `${node}-${Date.now()}-${Math.random().toString(16).slice(2, 8)}`;
      const planned = {
        node,
        diskName: node,
        level,
        fallback: level !== wanted ? "no previous backup of this disk" : undefined,
        backupId: id,
        parentId: level === "full" ? null : parent,
      } as const;
      if (planned.fallback) job.onMessage?.("warning", `${node}: full backup: ${planned.fallback}`);
      job.onMessage?.("info", `stand-in engine: ${node} ${level}`);
      const out = await sinkFor(planned);
      const sink = out.writable.getWriter();
      const header = enc.encode(
        `${JSON.stringify({ id, parent: planned.parentId, level, disk: node })}\n`,
      );
      const body = standinPayload(node, id);
      try {
        await sink.write(header);
        for (let at = 0; at < body.length; at += 65536) {
          if (job.signal?.aborted) throw new CancelledError("backup cancelled");
          if (slowMs) await delay(slowMs);
          await sink.write(body.subarray(at, at + 65536));
        }
        await sink.close();
        await out.commit();
      } catch (e) {
        await Deno.writeTextFile(`${job.stateDir}/cancel-cleanup`, node);
        throw e;
      }
      state[node] = id;
      results.push({
        ...planned,
        stats: { dirtyBytes: body.length, unchangedBytes: 0, zeroBytes: 0, dataBytes: body.length },
        streamBytes: header.length + body.length,
      });
    }
    await Deno.writeTextFile(`${job.stateDir}/standin.json`, JSON.stringify(state));
    return results;
  },
  async estimateBackup(job) {
    const state = await readState(job.stateDir);
    return job.nodes.map((n) => ({
      diskName: n,
      level: job.level === "auto" || (job.level !== "full" && !state[n]) ? "full" : job.level,
      bytes: payloadBytes,
      // The stand-in keeps no fulls apart: a differential is based on its last backup.
      lastBackupId: state[n] ?? null,
      lastFullId: state[n] ?? null,
    }));
  },
  openVmDiskRestore(disk) {
    return engine.openRestore({ path: `${disk.stateDir}/${disk.node}.vmdisk`, format: "raw" });
  },
  openRestore(target) {
    return Promise.resolve({
      async apply(stream: ReadableStream<Uint8Array>) {
        const all = new Uint8Array(await new Response(stream).arrayBuffer());
        const nl = all.indexOf(10);
        if (nl < 0) throw new InputError("stand-in stream has no header line");
        const h = JSON.parse(new TextDecoder().decode(all.subarray(0, nl)));
        const sidecar = `${target.path}.standin.json`;
        let last: string | null = null;
        try {
          last = JSON.parse(await Deno.readTextFile(sidecar)).last;
        } catch {
          last = null;
        }
        if (h.parent !== null && h.parent !== last) {
          throw new ChainError(
            `stream ${h.id} needs parent ${h.parent}, target holds ${last ?? "nothing"}`,
          );
        }
        const body = all.subarray(nl + 1);
        await Deno.writeFile(target.path, body, { append: h.parent !== null });
        await Deno.writeTextFile(sidecar, JSON.stringify({ last: h.id }));
        return { backupId: h.id, level: h.level, bytes: body.length };
      },
      close: () => Promise.resolve(),
    });
  },
};

if (import.meta.main) Deno.exit(await serveBackend(engine));
