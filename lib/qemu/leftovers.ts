/**
 * Removal of what a point in time leaves in QEMU when the process that took
 * it died before commit or abort: its export, fleecing job, temporary nodes,
 * overlay files and frozen bitmap copies. The checkpoint bitmaps are not
 * touched: the old checkpoint stays valid, and the bitmaps the dead attempt
 * added are removed by the next point in time of the same scope.
 *
 * Call it only while no other job of the same scope runs on this QEMU
 * (e.g. holding the caller's per-VM lock): it cannot tell a dead attempt from
 * a running one.
 *
 * @module
 */
import { isScopedTempId, scopePrefix } from "./checkpoint.ts";
import { removeOverlayFile } from "./files.ts";
import { cancelBlockJob, deleteExport, queryBlockNodes, queryExportIds } from "./blocknodes.ts";
import { removeBitmaps } from "./bitmaps.ts";
import type { QmpTransport } from "./qmp.ts";

/** What {@link removeLeftovers} removed. */
export interface Leftovers {
  exports: string[];
  jobs: string[];
  nodes: string[];
  files: string[];
  bitmaps: string[];
}

/** Options of {@link removeLeftovers}. */
export interface LeftoverOptions {
  /** Bitmap scope, as given to openPointInTime. */
  scope?: string;
  /** Removes an overlay file; default `Deno.remove` (QEMU runs on this machine). */
  removeFile?: (path: string) => Promise<void>;
}

/** Removes every temporary export, job, node, overlay file and bitmap copy of `scope`. */
export async function removeLeftovers(
  qmp: QmpTransport,
  options: LeftoverOptions = {},
): Promise<Leftovers> {
  const ours = (id: string) => isScopedTempId(id, options.scope);
  const removed: Leftovers = { exports: [], jobs: [], nodes: [], files: [], bitmaps: [] };

  for (const id of (await queryExportIds(qmp)).filter(ours)) {
    await deleteExport(qmp, id);
    removed.exports.push(id);
  }
  const blockJobs = await qmp.execute<{ device: string }[]>("query-block-jobs");
  for (const { device } of blockJobs.filter((j) => ours(j.device))) {
    await cancelBlockJob(qmp, device);
    removed.jobs.push(device);
  }
  const jobs = await qmp.execute<{ id: string; status: string }[]>("query-jobs");
  for (const job of jobs.filter((j) => ours(j.id) && j.status === "concluded")) {
    await qmp.execute("job-dismiss", { id: job.id });
    removed.jobs.push(job.id);
  }

  const nodes = await queryBlockNodes(qmp);
  // Overlays (o) sit on their file nodes (f): delete them first.
  const temp = [...nodes.values()].filter((n) => ours(n.name))
    .sort((a, b) => kindOrder(a.name) - kindOrder(b.name));
  for (const node of temp) {
    await qmp.execute("blockdev-del", { "node-name": node.name });
    removed.nodes.push(node.name);
    if (/f[0-9]+$/.test(node.name)) {
      await removeOverlayFile(node.filename, options.removeFile);
      removed.files.push(node.filename);
    }
  }

  const tmpPrefix = `${scopePrefix(options.scope)}tmp-`;
  for (const node of (await queryBlockNodes(qmp)).values()) {
    const copies = node.bitmaps.map((b) => b.name).filter((name) => name.startsWith(tmpPrefix));
    if (copies.length > 0) removed.bitmaps.push(...await removeBitmaps(qmp, node.name, copies));
  }
  return removed;
}

function kindOrder(id: string): number {
  return /o[0-9]+$/.test(id) ? 0 : 1;
}
