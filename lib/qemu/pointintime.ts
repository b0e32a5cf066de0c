/**
 * Point-in-time views of a VM's disks, read over QEMU's NBD server while the
 * guest keeps writing, with the dirty bitmap lifecycle around them.
 *
 * One QMP `transaction` covers all disks, so a multi-disk VM gets one point in
 * time. Per disk it adds the new persistent bitmap(s), copies the bitmap to
 * export into a temporary frozen one, and starts image fleecing
 * (`blockdev-backup sync=none` into a temporary qcow2 overlay backed by the
 * disk). The old checkpoint bitmaps keep recording throughout: so an aborted
 * or crashed attempt loses nothing, the old checkpoint still holds every
 * change since the last accepted backup, and only an accepted backup
 * (`commit`) drops them.
 *
 * @module
 */
import { DirtybitError, SourceError, UsageError, type Wording } from "../core/errors.ts";
import {
  bitmapNames,
  type DiskCheckpoint,
  type DiskPlan,
  newTempPrefix,
  planDisk,
} from "./checkpoint.ts";
import {
  blockdevCreate,
  cancelBlockJob,
  deleteExport,
  missingNode,
  queryBlockJobs,
  queryBlockNodes,
} from "./blocknodes.ts";
import { removeBitmaps } from "./bitmaps.ts";
import { removeOverlayFile } from "./files.ts";
import type { QmpTransport } from "./qmp.ts";
import { type NbdServer, startNbdServer } from "./nbd_server.ts";
import type { RunRecord } from "../core/run_record.ts";
import type { BackupLevel } from "../core/level.ts";

/** One disk of a point in time, ready to be read over NBD. */
export interface PointInTimeDisk {
  node: string;
  /** NBD export name of the frozen view (read-only). */
  exportName: string;
  /** NBD URI of the view. */
  uri: string;
  /** Level actually taken for this disk. */
  level: BackupLevel;
  /** Why a requested incremental or differential became full. */
  reason?: string;
  /** `qemu:dirty-bitmap:NAME` meta context with the blocks to read (incremental, differential). */
  dirtyContext?: string;
  /** Virtual size in bytes. */
  size: number;
  /** Dirty block size in bytes of the exported bitmap and of the new checkpoint. */
  granularity: number;
}

/** An open point in time; end it with exactly one of `commit` or `abort`. */
export interface PointInTime {
  disks: PointInTimeDisk[];
  /**
   * The backup was accepted: drops what the old checkpoint needed, tears the
   * view down and returns the checkpoints to persist. Persist them before
   * anything else: if they are lost, the next backup falls back to full.
   */
  commit(): Promise<DiskCheckpoint[]>;
  /**
   * The backup failed or was cancelled: tears the view down and removes the
   * bitmaps this attempt added; the old checkpoints stay valid and still hold
   * every change. A no-op once the point in time has ended.
   */
  abort(): Promise<void>;
}

/** Request of {@link openPointInTime}. */
export interface PointInTimeRequest {
  /**
   * The disks, each with its last accepted checkpoint if there is one, why
   * it must get a full whatever its bitmaps say, if it must, and the other
   * bitmaps the caller's state names (its own even without an owner id).
   */
  disks: {
    node: string;
    checkpoint?: DiskCheckpoint;
    fullBecause?: string;
    adopt?: readonly string[];
  }[];
  level: BackupLevel;
  /** Names the new checkpoint: a fresh id for every attempt. */
  checkpointId: string;
  /** Directory, writable by QEMU, for the temporary overlays (and the NBD socket if needed). */
  workDir: string;
  /**
   * Unix socket of QEMU's NBD server: started there if QEMU runs none, assumed
   * to be the running one's otherwise. Default: a socket in `workDir`.
   */
  nbdSocket?: string;
  /** Bitmap scope separating independent users of a disk (e.g. `repl`); default none. */
  scope?: string;
  /** Owner id the new bitmaps carry (see checkpoint.ts); default none (unowned names). */
  owner?: string;
  /** Remove another owner's bitmaps and take a full instead of refusing (ChainError). */
  takeOver?: boolean;
  /** How to take a disk over, in that refusal (default: a backup's take_over and a new chain). */
  takeOverHint?: Wording;
  /** Removes an overlay file; default `Deno.remove` (QEMU runs on this machine). */
  removeFile?: (path: string) => Promise<void>;
  /**
   * The run's record, where the NBD server is recorded before it is started
   * (and a killed run's server recognised: lib/qemu/nbd_server.ts).
   */
  run?: RunRecord;
}

interface DiskResources {
  plan: DiskPlan;
  overlayPath?: string;
  fileNode?: string;
  overlayNode?: string;
  jobId?: string;
  exportId?: string;
}

/**
 * Takes one point in time of all requested disks and exports each view
 * read-only over NBD. On any failure everything done so far is rolled back.
 */
export async function openPointInTime(
  qmp: QmpTransport,
  req: PointInTimeRequest,
): Promise<PointInTime> {
  if (req.disks.length === 0) throw new UsageError("a point in time needs at least one disk");
  const seen = new Set<string>();
  for (const d of req.disks) {
    if (seen.has(d.node)) throw new UsageError(`disk node ${d.node} is listed twice`);
    seen.add(d.node);
  }
  const names = bitmapNames(req.checkpointId, req.scope, req.owner);
  const nodes = await queryBlockNodes(qmp);
  const plans = req.disks.map((d) => {
    const node = nodes.get(d.node);
    if (!node) throw missingNode(d.node);
    return planDisk(node, d.checkpoint, req.level, names, {
      scope: req.scope,
      takeOver: req.takeOver,
      takeOverHint: req.takeOverHint,
      adopt: d.adopt,
      fullBecause: d.fullBecause,
    });
  });
  for (const plan of plans) await removeBitmaps(qmp, plan.node, plan.removeNow);

  const session = new Session(qmp, req, plans);
  try {
    return await session.open();
  } catch (err) {
    await session.teardown("abort").catch(() => undefined);
    throw err;
  }
}

class Session implements PointInTime {
  disks: PointInTimeDisk[] = [];
  readonly #qmp: QmpTransport;
  readonly #req: PointInTimeRequest;
  readonly #resources: DiskResources[];
  readonly #token: string;
  #socket = "";
  #server: NbdServer | undefined;
  #bitmapsAdded = false;
  #ended = false;

  constructor(qmp: QmpTransport, req: PointInTimeRequest, plans: DiskPlan[]) {
    this.#qmp = qmp;
    this.#req = req;
    this.#resources = plans.map((plan) => ({ plan }));
    this.#token = newTempPrefix(req.scope);
  }

  async open(): Promise<PointInTime> {
    for (const [i, r] of this.#resources.entries()) await this.#createOverlay(i, r);
    await this.#ensureNbdServer();

    const actions: object[] = [];
    for (const [i, r] of this.#resources.entries()) {
      const { node, names, source, level } = r.plan;
      const add = (name: string) => ({
        type: "block-dirty-bitmap-add",
        data: { node, name, persistent: true },
      });
      actions.push(add(names.inc));
      if (level === "full") actions.push(add(names.base));
      if (source) {
        actions.push(
          {
            type: "block-dirty-bitmap-add",
            data: {
              node,
              name: names.tmp,
              persistent: false,
              disabled: true,
              granularity: source.granularity,
            },
          },
          {
            type: "block-dirty-bitmap-merge",
            data: { node, target: names.tmp, bitmaps: [source.name] },
          },
        );
      }
      r.jobId = `${this.#token}j${i}`;
      actions.push({
        type: "blockdev-backup",
        data: { "job-id": r.jobId, device: node, target: r.overlayNode, sync: "none" },
      });
    }
    try {
      await this.#qmp.execute("transaction", { actions });
    } catch (err) {
      for (const r of this.#resources) r.jobId = undefined;
      throw err;
    }
    this.#bitmapsAdded = true;

    for (const [i, r] of this.#resources.entries()) {
      const { node, names, source } = r.plan;
      const exportName = `dirtybit-${this.#req.checkpointId}-${node}`;
      r.exportId = `${this.#token}e${i}`;
      try {
        await this.#qmp.execute("block-export-add", {
          type: "nbd",
          id: r.exportId,
          "node-name": r.overlayNode,
          name: exportName,
          writable: false,
          ...(source ? { bitmaps: [{ node, name: names.tmp }] } : {}),
        });
      } catch (err) {
        r.exportId = undefined;
        throw err;
      }
    }

    const nodes = await queryBlockNodes(this.#qmp);
    this.disks = this.#resources.map(({ plan }) => {
      const exportName = `dirtybit-${this.#req.checkpointId}-${plan.node}`;
      const bitmapName = plan.source ? plan.names.tmp : plan.names.inc;
      const bitmap = nodes.get(plan.node)?.bitmaps.find((b) => b.name === bitmapName);
      return {
        node: plan.node,
        exportName,
        uri: `nbd+unix:///${encodeURIComponent(exportName)}?socket=${this.#socket}`,
        level: plan.level,
        ...(plan.reason ? { reason: plan.reason } : {}),
        ...(plan.source ? { dirtyContext: `qemu:dirty-bitmap:${plan.names.tmp}` } : {}),
        size: plan.size,
        granularity: bitmap?.granularity ?? 0,
      };
    });
    return this;
  }

  async commit(): Promise<DiskCheckpoint[]> {
    if (this.#ended) throw new Error("commit() of a point in time that has already ended");
    const jobs = await queryBlockJobs(this.#qmp);
    const broken = this.#resources.find((r) => !LIVE_JOB.has(jobs.get(r.jobId!) ?? "gone"));
    if (broken) {
      await this.teardown("abort");
      throw new SourceError(
        `the fleecing job of node ${broken.plan.node} ended early, so its view was not a ` +
          `point in time (is ${this.#req.workDir} full?); the backup must be discarded`,
      );
    }
    await this.teardown("commit");
    return this.#resources.map((r) => r.plan.next);
  }

  async abort(): Promise<void> {
    if (!this.#ended) await this.teardown("abort");
  }

  /**
   * Undoes everything that was set up, each step whatever became of the
   * others, and then throws the first failure. `commit` removes the old
   * checkpoint's bitmaps, `abort` the ones this attempt added.
   */
  async teardown(outcome: "commit" | "abort"): Promise<void> {
    this.#ended = true;
    const errors: unknown[] = [];
    const step = async (fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        errors.push(err);
      }
    };
    const qmp = this.#qmp;
    for (const r of this.#resources) {
      if (r.exportId) await step(() => deleteExport(qmp, r.exportId!));
    }
    for (const r of this.#resources) {
      if (r.jobId) await step(() => cancelBlockJob(qmp, r.jobId!));
    }
    if (this.#bitmapsAdded) {
      for (const { plan } of this.#resources) {
        const drop = outcome === "commit" ? plan.removeOnCommit : plan.added;
        await step(() => removeBitmaps(qmp, plan.node, [plan.names.tmp, ...drop]));
      }
    }
    for (const r of this.#resources) {
      if (r.overlayNode) {
        await step(() => qmp.execute("blockdev-del", { "node-name": r.overlayNode }));
      }
      if (r.fileNode) await step(() => qmp.execute("blockdev-del", { "node-name": r.fileNode }));
      if (r.overlayPath) await step(() => removeOverlayFile(r.overlayPath!, this.#req.removeFile));
    }
    if (this.#server) await step(() => this.#server!.stop());
    if (errors.length > 0) {
      const first = errors[0];
      const text = first instanceof Error ? first.message : String(first);
      if (first instanceof DirtybitError && errors.length === 1) throw first;
      throw new SourceError(
        `cleaning up the point in time failed (${errors.length} step(s)): ${text}`,
      );
    }
  }

  async #createOverlay(i: number, r: DiskResources): Promise<void> {
    const path = `${this.#req.workDir}/${this.#token}${i}.qcow2`;
    await blockdevCreate(this.#qmp, `${this.#token}c${i}`, {
      driver: "file",
      filename: path,
      size: 0,
    });
    r.overlayPath = path;
    const fileNode = `${this.#token}f${i}`;
    await this.#qmp.execute("blockdev-add", {
      driver: "file",
      "node-name": fileNode,
      filename: path,
    });
    r.fileNode = fileNode;
    await blockdevCreate(this.#qmp, `${this.#token}q${i}`, {
      driver: "qcow2",
      file: fileNode,
      size: r.plan.size,
    });
    const overlayNode = `${this.#token}o${i}`;
    await this.#qmp.execute("blockdev-add", {
      driver: "qcow2",
      "node-name": overlayNode,
      file: fileNode,
      backing: r.plan.node,
    });
    r.overlayNode = overlayNode;
  }

  async #ensureNbdServer(): Promise<void> {
    const socket = this.#req.nbdSocket ?? `${this.#req.workDir}/dirtybit-nbd.sock`;
    this.#server = await startNbdServer(this.#qmp, {
      addr: { type: "unix", path: socket },
      given: this.#req.nbdSocket !== undefined,
      run: this.#req.run,
      busy: "QEMU already runs an NBD server: pass its unix socket as the NBD socket to use it",
    });
    this.#socket = socket;
  }
}

/** Job states of a fleecing job that still protects its view. */
const LIVE_JOB = new Set(["running", "paused", "ready", "standby"]);
