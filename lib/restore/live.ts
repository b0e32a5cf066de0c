/**
 * Live restore: a running QEMU's qcow2 disk node gets its data from a served
 * backup chain while the guest already uses it. The chain's NBD export is
 * added to that QEMU as a node and made the target node's backing (reads of
 * clusters the target does not hold yet fall through to the export); a
 * block-stream job then copies every cluster into the target and drops the
 * backing, after which the export is removed and closed.
 *
 * The target image's sidecar (`IMAGE.dbit.json`, as for file restores) marks
 * it incomplete from before the backing is attached until the job completed.
 * An interrupted live restore is resumed by running it again with the same
 * streams: block-stream copies only what the target does not hold yet (and
 * never overwrites what the guest wrote meanwhile). Until then the guest's
 * reads of blocks not copied yet fail (the export is gone), never return zeros.
 *
 * @module
 */
import { join } from "node:path";
import { tmpdir } from "node:os";
import {
  CancelledError,
  ChainError,
  describeError,
  InputError,
  SourceError,
  TargetError,
  wrapError,
} from "../core/errors.ts";
import { readJsonFile, writeFileAtomic } from "../core/atomic_file.ts";
import { delay } from "../core/async.ts";
import { fitsUnixSocket } from "../core/files.ts";
import { QmpError, QmpSocket } from "../qemu/qmp.ts";
import { cancelBlockJob, queryBlockNode } from "../qemu/blocknodes.ts";
import { lockDisks } from "../qemu/disk_lock.ts";
import { checkChainOrder } from "../stream/chain.ts";
import type { StreamHeader } from "../stream/format.ts";
import { catalogFile } from "../keep/catalog.ts";
import { startServe } from "../serve/mod.ts";

/** What to restore where. */
export interface LiveRestoreSpec {
  /** QMP socket of the QEMU (or qemu-storage-daemon) that runs the target. */
  qmp: string;
  /** The target's qcow2 format node. */
  node: string;
  /** A full and its incrementals (or a differential), in order. */
  streams: string[];
  /** Copy rate limit in bytes per second (0 or undefined: none). */
  rate?: number;
  /** Cancels: the job stops, the target stays marked incomplete; throws CancelledError. */
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
  onInfo?: (text: string) => void;
  /** What the server reports as warnings and errors (failed reads). */
  onWarning?: (text: string) => void;
}

/** The outcome. */
export interface LiveRestoreResult {
  node: string;
  image: string;
  backupId: string;
  levels: string[];
  /** Bytes of the disk the job went over. */
  bytes: number;
  /** A live restore left incomplete was resumed. */
  resumed: boolean;
}

/** The sidecar of a file target, with the chain of a live restore while it is incomplete. */
interface LiveSidecar {
  format: "qcow2";
  last: StreamHeader;
  applying?: string;
  live?: string[];
}

/** Ids of our nodes and jobs; no other cleanup (lib/qemu/leftovers.ts) takes them for its own. */
const PREFIX = "dirtybit-live-";
const POLL_MS = 250;

/** Restores `spec.streams` into the running node `spec.node`. */
export async function liveRestore(spec: LiveRestoreSpec): Promise<LiveRestoreResult> {
  const headers = await chainHeaders(spec.streams);
  const last = headers.at(-1)!;
  const ids = headers.map((h) => h.backupId);
  const qmp = await QmpSocket.connect(spec.qmp);
  let lock;
  let served;
  try {
    const info = await queryBlockNode(qmp, spec.node);
    lock = await lockDisks(qmp, [spec.node]);
    if (info.driver !== "qcow2") {
      throw new TargetError(
        `live restore needs a qcow2 node (the backup is attached as its backing file): ${spec.node} is ${info.driver}`,
      );
    }
    if (info.size !== last.virtualSize) {
      throw new ChainError(
        `${spec.node} is ${info.size} bytes but backup ${last.backupId} is of a ${last.virtualSize}-byte disk: create the target with that size`,
      );
    }
    const layout = await nodeLayout(qmp, spec.node);
    const image = layout.image;
    const sidecarPath = `${image}.dbit.json`;
    const sidecar = await readJsonFile<LiveSidecar>(sidecarPath);
    const resumed = sidecar !== null;
    if (sidecar && !(sidecar.live && sameIds(sidecar.live, ids))) {
      throw new ChainError(
        sidecar.live
          ? `${image} was left incomplete by a live restore of backup ${sidecar.applying}: run that live restore again to resume it, or restore into a new image`
          : `${image} holds a restore of backup ${sidecar.last.backupId} already: a live restore needs a new, empty qcow2 image`,
      );
    }
    const socket = await liveSocket(image);
    served = await startServe(spec.streams, {
      socket,
      name: "dirtybit-live",
      onLog: (kind, text) => kind !== "info" && spec.onWarning?.(text),
    });
    const uri = new URL(served.uri);
    const serverPath = uri.searchParams.get("socket")!;
    // QEMU may run as another user (libvirt's qemu user owns the images it opens).
    const owner = await Deno.stat(image);
    await Deno.chown(serverPath, owner.uid, owner.gid).catch(() => {});
    await writeFileAtomic(
      sidecarPath,
      JSON.stringify({ format: "qcow2", last, applying: last.backupId, live: ids }, null, 2) + "\n",
    );
    const tag = [...crypto.getRandomValues(new Uint8Array(4))]
      .map((b) => b.toString(16).padStart(2, "0")).join("");
    const nbdNode = `${PREFIX}${tag}-nbd`;
    const jobId = `${PREFIX}${tag}-stream`;
    const stale = await staleOf(qmp, spec.node);
    for (const job of stale.jobs) await cancelBlockJob(qmp, job);
    try {
      await qmp.execute("blockdev-add", {
        driver: "nbd",
        "node-name": nbdNode,
        server: { type: "unix", path: serverPath },
        export: decodeURIComponent(uri.pathname.slice(1)),
        "read-only": true,
      });
      await attachBacking(qmp, spec.node, layout, nbdNode);
    } catch (err) {
      // Nothing reached the target: a first attempt leaves it as it was, not incomplete.
      await qmp.execute("blockdev-del", { "node-name": nbdNode }).catch(() => {});
      if (!resumed) await Deno.remove(sidecarPath).catch(() => {});
      throw err;
    }
    if (stale.backing) {
      // Left for the orphan sweep of a later run if QEMU still holds it.
      await qmp.execute("blockdev-del", { "node-name": stale.backing }).catch(() => {});
    }
    if (!lock.othersRunning) await removeOrphanNodes(qmp, nbdNode);
    spec.onInfo?.(
      `${
        resumed ? "resuming" : "started"
      } live restore of backup ${last.backupId} into ${spec.node} (${image})`,
    );
    await qmp.execute("block-stream", {
      "job-id": jobId,
      device: spec.node,
      ...(spec.rate ? { speed: spec.rate } : {}),
    });
    const bytes = await waitForJob(qmp, jobId, spec);
    await qmp.execute("blockdev-del", { "node-name": nbdNode });
    await writeFileAtomic(sidecarPath, JSON.stringify({ format: "qcow2", last }, null, 2) + "\n");
    return {
      node: spec.node,
      image,
      backupId: last.backupId,
      levels: headers.map((h) => h.level),
      bytes,
      resumed,
    };
  } finally {
    await served?.close().catch(() => {});
    await lock?.release();
    await qmp.close().catch(() => {});
  }
}

async function chainHeaders(streams: string[]): Promise<StreamHeader[]> {
  const headers: StreamHeader[] = [];
  for (const path of streams) {
    const entry = await catalogFile(path);
    if (!entry) throw new InputError(`${path} is not a dirtybit backup stream`);
    if ("error" in entry) throw new InputError(`${path}: ${entry.error}`);
    headers.push(entry.header);
  }
  if (headers.length === 0) throw new InputError("live restore: name at least one STREAM");
  checkChainOrder(null, headers[0]);
  for (let i = 1; i < headers.length; i++) checkChainOrder(headers[i - 1], headers[i]);
  return headers;
}

/**
 * The export's socket: beside the image (where QEMU already has access), or
 * one per image under the temporary directory when that path is too long for
 * a Unix socket (108 bytes).
 */
async function liveSocket(image: string): Promise<string> {
  const beside = `${image}.dbit-live.sock`;
  if (fitsUnixSocket(beside)) return beside;
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(image));
  const key = [...new Uint8Array(digest).subarray(0, 8)]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
  return join(tmpdir(), `dirtybit-live-${key}.sock`);
}

function sameIds(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * What a killed attempt on `node` left: its stream job (it fails once its
 * export is gone, but must be gone before the backing changes) and the export
 * node that is still the backing.
 */
async function staleOf(
  qmp: QmpSocket,
  node: string,
): Promise<{ jobs: string[]; backing?: string }> {
  const graph = await qmp.execute<BlockGraph>("x-debug-query-block-graph");
  const id = graph.nodes.find((n) => n.name === node)?.id;
  const name = (nodeId: number) => graph.nodes.find((n) => n.id === nodeId)?.name ?? "";
  const jobs = graph.nodes.filter((n) =>
    n.type === "block-job" && n.name.startsWith(PREFIX) &&
    graph.edges.some((e) => e.parent === n.id && e.child === id)
  ).map((n) => n.name);
  const edge = graph.edges.find((e) => e.parent === id && e.name === "backing");
  const backing = edge && name(edge.child).startsWith(PREFIX) ? name(edge.child) : undefined;
  return { jobs, backing };
}

interface BlockGraph {
  nodes: { id: number; name: string; type: string }[];
  edges: { parent: number; child: number; name: string }[];
}

/** What blockdev-reopen must be given again about a qcow2 node, and its image file. */
interface NodeLayout {
  /** The file child's node name. */
  file: string;
  /** The image's path (the node's own filename is a json: description once it has a backing). */
  image: string;
  readOnly: boolean;
  detectZeroes: string;
  cache: { direct: boolean; "no-flush": boolean };
}

async function nodeLayout(qmp: QmpSocket, node: string): Promise<NodeLayout> {
  const graph = await qmp.execute<BlockGraph>("x-debug-query-block-graph");
  const self = graph.nodes.find((n) => n.name === node);
  const fileEdge = graph.edges.find((e) => e.parent === self?.id && e.name === "file");
  const file = graph.nodes.find((n) => n.id === fileEdge?.child)?.name;
  const raw = await qmp.execute<
    {
      "node-name": string;
      file: string;
      ro: boolean;
      detect_zeroes: string;
      cache: { direct: boolean; "no-flush": boolean };
    }[]
  >("query-named-block-nodes", { flat: true });
  const current = raw.find((n) => n["node-name"] === node);
  const image = raw.find((n) => n["node-name"] === file)?.file;
  if (!current || !file || !image) {
    throw new TargetError(
      `${node} has no image file node QEMU names: live restore cannot attach to it`,
    );
  }
  return {
    file,
    image,
    readOnly: current.ro,
    detectZeroes: current.detect_zeroes,
    cache: { direct: current.cache.direct, "no-flush": current.cache["no-flush"] },
  };
}

/**
 * Reopens `node` with `backing` as its backing node. blockdev-reopen resets
 * the options it is not given: the file child, read-only, cache and
 * detect-zeroes are carried over as QEMU reported them.
 */
async function attachBacking(
  qmp: QmpSocket,
  node: string,
  layout: NodeLayout,
  backing: string,
): Promise<void> {
  try {
    await qmp.execute("blockdev-reopen", {
      options: [{
        driver: "qcow2",
        "node-name": node,
        file: layout.file,
        backing,
        "read-only": layout.readOnly,
        "detect-zeroes": layout.detectZeroes,
        cache: layout.cache,
      }],
    });
  } catch (err) {
    if (err instanceof QmpError) {
      throw new TargetError(`cannot attach the backup to ${node} as its backing: ${err.desc}`);
    }
    throw err;
  }
}

/**
 * Export nodes of killed attempts that are nobody's backing any more, when no
 * other dirtybit job runs on this QEMU (another live restore's node may not
 * be attached yet).
 */
async function removeOrphanNodes(qmp: QmpSocket, keep: string): Promise<void> {
  const graph = await qmp.execute<BlockGraph>("x-debug-query-block-graph");
  const orphans = graph.nodes.filter((n) =>
    n.type === "block-driver" && n.name.startsWith(PREFIX) && n.name !== keep &&
    !graph.edges.some((e) => e.child === n.id)
  );
  for (const n of orphans) {
    await qmp.execute("blockdev-del", { "node-name": n.name }).catch(() => {});
  }
}

/**
 * Follows the job to its end; its length in bytes. The job dismisses itself:
 * QEMU 7.2 crashes on query-named-block-nodes while a concluded stream job
 * waits to be dismissed, so no such window is left open.
 */
async function waitForJob(qmp: QmpSocket, jobId: string, spec: LiveRestoreSpec): Promise<number> {
  const ofJob = (e: { data?: Record<string, unknown> }) => e.data?.device === jobId;
  for (;;) {
    const completed = qmp.events("BLOCK_JOB_COMPLETED").find(ofJob);
    if (completed) {
      const data = completed.data as { len: number; offset: number; error?: string };
      if (data.error) {
        throw new SourceError(
          `live restore of ${spec.node} failed: ${data.error}; ${spec.node} is marked incomplete: run the live restore again to resume it`,
        );
      }
      spec.onProgress?.(data.len, data.len);
      return data.len;
    }
    if (spec.signal?.aborted) {
      await cancelBlockJob(qmp, jobId).catch(() => {});
      throw new CancelledError(
        `live restore cancelled by a signal; ${spec.node} is marked incomplete and its blocks not copied yet cannot be read: run the same live restore again to resume it`,
      );
    }
    const jobs = await qmp.execute<{ device: string; offset: number; len: number }[]>(
      "query-block-jobs",
    ).catch((err) => {
      throw wrapError(err, SourceError, `live restore of ${spec.node}: ${describeError(err)}`);
    });
    const job = jobs.find((j) => j.device === jobId);
    if (job) spec.onProgress?.(job.offset, job.len);
    else if (qmp.events("BLOCK_JOB_CANCELLED").some(ofJob)) {
      throw new SourceError(
        `the live restore job of ${spec.node} was cancelled in QEMU; ${spec.node} is marked incomplete: run the live restore again to resume it`,
      );
    }
    await delay(POLL_MS);
  }
}
