/**
 * What QEMU reports about block nodes and their dirty bitmaps, and the QMP
 * waits the point-in-time code needs (jobs and exports that end
 * asynchronously). Waits poll instead of relying on events, so they work over
 * transports without events (virsh qemu-monitor-command).
 *
 * @module
 */
import { SourceError, TimeoutError } from "../core/errors.ts";
import { QmpError, type QmpTransport } from "./qmp.ts";
import { delay } from "../core/async.ts";

/** A dirty bitmap as `query-named-block-nodes` reports it. */
export interface BitmapInfo {
  name: string;
  /** Bytes covered by one bit: the dirty block size. */
  granularity: number;
  /** Dirty bytes. */
  count: number;
  recording: boolean;
  persistent: boolean;
  /** Exported or otherwise locked by a job: cannot be changed or removed. */
  busy: boolean;
  /** Left `in-use` by an unclean exit of QEMU: its content cannot be trusted. */
  inconsistent?: boolean;
}

/** A block node with its virtual size and bitmaps. */
export interface BlockNodeInfo {
  name: string;
  /** The image file (or a JSON description of it) the node opens. */
  filename: string;
  /** The format driver (`qcow2`, `raw`, ...). */
  driver: string;
  size: number;
  /** Bytes the image takes on the host (QEMU's actual-size), when QEMU knows it. */
  allocated?: number;
  bitmaps: BitmapInfo[];
}

interface RawNode {
  "node-name": string;
  file: string;
  drv: string;
  image?: { "virtual-size"?: number; "actual-size"?: number };
  "dirty-bitmaps"?: (Omit<BitmapInfo, "name"> & { name?: string })[];
}

/**
 * All named block nodes, by node name, with their named bitmaps (block jobs
 * add anonymous ones of their own, which are left out).
 */
export async function queryBlockNodes(qmp: QmpTransport): Promise<Map<string, BlockNodeInfo>> {
  const raw = await qmp.execute<RawNode[]>("query-named-block-nodes", { flat: true });
  const nodes = new Map<string, BlockNodeInfo>();
  for (const n of raw) {
    nodes.set(n["node-name"], {
      name: n["node-name"],
      filename: n.file,
      driver: n.drv,
      size: n.image?.["virtual-size"] ?? 0,
      allocated: n.image?.["actual-size"],
      bitmaps: (n["dirty-bitmaps"] ?? []).filter((b): b is BitmapInfo => b.name !== undefined),
    });
  }
  return nodes;
}

/** One node, or a SourceError that says how to find the right name. */
export async function queryBlockNode(qmp: QmpTransport, node: string): Promise<BlockNodeInfo> {
  const info = (await queryBlockNodes(qmp)).get(node);
  if (!info) throw missingNode(node);
  return info;
}

/** The error for a node name QEMU does not know. */
export function missingNode(node: string): SourceError {
  return new SourceError(
    `block node ${node} not found; list the disk's format nodes with QMP query-named-block-nodes`,
  );
}

/** Polls `check` until it returns true; SourceError naming `what` after `timeoutMs`. */
export async function pollUntil(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let pause = 5;
  while (!(await check())) {
    if (Date.now() > deadline) {
      throw new TimeoutError(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await delay(pause);
    pause = Math.min(pause * 2, 200);
  }
}

interface JobInfo {
  id: string;
  status: string;
  error?: string;
}

/**
 * Runs a `blockdev-create` job to its end and dismisses it; throws its error.
 * `options` is QEMU's BlockdevCreateOptions.
 */
export async function blockdevCreate(
  qmp: QmpTransport,
  jobId: string,
  options: Record<string, unknown>,
): Promise<void> {
  await qmp.execute("blockdev-create", { "job-id": jobId, options });
  let job: JobInfo | undefined;
  await pollUntil(`blockdev-create job ${jobId}`, async () => {
    const jobs = await qmp.execute<JobInfo[]>("query-jobs");
    job = jobs.find((j) => j.id === jobId);
    return !job || job.status === "concluded";
  });
  if (job) await qmp.execute("job-dismiss", { id: jobId });
  if (job?.error) {
    throw new SourceError(`cannot create ${options.driver} image: ${job.error}`);
  }
}

/** Block jobs that are still there, by id, with their status. */
export async function queryBlockJobs(qmp: QmpTransport): Promise<Map<string, string>> {
  const jobs = await qmp.execute<{ device: string; status?: string }[]>("query-block-jobs");
  return new Map(jobs.map((j) => [j.device, j.status ?? "running"]));
}

/** Cancels a block job and waits until it has disappeared; a job already gone is fine. */
export async function cancelBlockJob(qmp: QmpTransport, jobId: string): Promise<void> {
  try {
    await qmp.execute("block-job-cancel", { device: jobId, force: true });
  } catch (err) {
    if (!(err instanceof QmpError && err.qmpClass === "DeviceNotActive")) throw err;
  }
  await pollUntil(`block job ${jobId} to end`, async () => !(await queryBlockJobs(qmp)).has(jobId));
}

/** Ids of the block exports that exist. */
export async function queryExportIds(qmp: QmpTransport): Promise<string[]> {
  const exports = await qmp.execute<{ id: string }[]>("query-block-exports");
  return exports.map((e) => e.id);
}

/**
 * Removes an export, dropping its clients, and waits until QEMU has released
 * it (deletion finishes asynchronously). An export already gone is fine.
 */
export async function deleteExport(qmp: QmpTransport, id: string): Promise<void> {
  if (!(await queryExportIds(qmp)).includes(id)) return;
  try {
    await qmp.execute("block-export-del", { id, mode: "hard" });
  } catch (err) {
    // A second delete of an export that is already going away is refused: wait for it.
    if (!(err instanceof QmpError)) throw err;
  }
  await pollUntil(`export ${id} to go away`, async () => !(await queryExportIds(qmp)).includes(id));
}
