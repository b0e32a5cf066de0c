/**
 * Backup, estimate, listing and query sessions (docs/ptcomm.md §4): one
 * virtual file per disk and level, the engine's stream as its data, job
 * messages with the per-layer statistics and any fallback to full.
 *
 * @module
 */
import { basename } from "node:path";
import { UsageError } from "../core/errors.ts";
import { PARAMS, type Params } from "../params/params.ts";
import type { Channel } from "./channel.ts";
import { engineLevel, type JobInfo } from "./job_info.ts";
import { backupFileName, NAMESPACE, vmDirName } from "./names.ts";
import type { BackendEngine, EngineJob } from "./engine_port.ts";
import type { DiskBackupResult, PlannedDisk } from "../backup/plan.ts";
import { PtcommFiles } from "./ptcomm_sink.ts";
import { DEFAULT_COMPRESSION } from "../stream/compression.ts";
import { domainSourceFromParams, vmSourceFromParams } from "../params/sources.ts";
import { delay } from "../core/async.ts";
import { formatBytes } from "../core/bytes.ts";
import { chainProblem, loadBaculaJobs, recordBaculaJob } from "./bacula_jobs.ts";
import { backendStateDir } from "../params/state_dir.ts";

/** Everything a job handler gets. */
export interface JobContext {
  ch: Channel;
  job: JobInfo;
  params: Params;
  engine: BackendEngine;
  workDir: string;
  /** Answers the job start command with `F`; call once prepared. */
  started(): Promise<void>;
}

/** The VM name used in file names: `domain` or `vm`, else the QMP socket's base name. */
export function vmName(params: Params): string {
  return params.domain ?? params.vm ?? basename(params.qmp ?? "qemu").replace(/\.[^.]*$/, "");
}

/** The state directory of the job's VM: `state_dir`, else one per VM in the working directory. */
export function stateDirOf(params: Params, workDir: string): string {
  return backendStateDir(params.state_dir, workDir, vmDirName(vmName(params)));
}

/**
 * The engine job for this session: a local QEMU (`qmp=` and `node=`), or a
 * CloudStack VM (`vm=` with url and keys, no `qmp=`); refuses a session
 * without a usable source.
 */
async function engineJob(ctx: JobContext): Promise<EngineJob> {
  const { params, job } = ctx;
  const domain = domainSourceFromParams(params) ?? undefined;
  const vm = !domain && !params.qmp && params.vm
    ? await vmSourceFromParams(params, {
      warn: (w) => void ctx.ch.say("W", w((p) => p)).catch(() => {}),
    })
    : undefined;
  if (!domain && !vm && !params.qmp) {
    throw new UsageError(
      "parameter qmp, vm or domain is missing: give domain=NAME (a libvirt domain), vm=VM with " +
        "url, apikey and secretkey_file, or qmp=SOCKET and node=NODE",
    );
  }
  if (!domain && !vm && !params.node?.length) {
    throw new UsageError("parameter node is missing: give node=NODE with qmp");
  }
  return {
    qmp: params.qmp,
    vm,
    domain,
    nbdSocket: params.nbd_socket,
    nodes: params.node ?? [],
    level: engineLevel(job.level),
    stateDir: stateDirOf(params, ctx.workDir),
    takeOver: params.take_over,
    compression: params.compress ?? DEFAULT_COMPRESSION,
    metadata: { bacula: { job: job.name, jobId: job.jobId, vm: vmName(params) } },
    signal: ctx.ch.signal,
    onMessage: (kind, text) => void ctx.ch.say(kind === "info" ? "I" : "W", text).catch(() => {}),
  };
}

/** How long a cancelled backup may take to clean up (the FD closes the pipes after 5 s). */
const CLEANUP_GRACE_MS = 4000;

const now = () => Math.floor(Date.now() / 1000);

/** FNAME, STAT, TSTAMP and the attributes' F of one file. */
export async function sendAttributes(
  ch: Channel,
  name: string,
  size: number,
  time: number,
): Promise<void> {
  await ch.send(`FNAME:${name}`);
  await ch.send(`STAT:F ${size} 0 0 100640 1`);
  await ch.send(`TSTAMP:${time} ${time} ${time}`);
  await ch.eod();
}

/** The job message with a disk's per-layer statistics. */
function statsMessage(r: DiskBackupResult): string {
  const s = r.stats;
  return `${r.diskName}: ${r.level} backup ${r.backupId}` +
    (r.parentId ? ` on ${r.parentId}` : "") +
    `: dirty (L1) ${formatBytes(s.dirtyBytes)}, unchanged by hash (L2) ${
      formatBytes(s.unchangedBytes)
    }, ` +
    `zero (L3) ${formatBytes(s.zeroBytes)}, data stored ${formatBytes(s.dataBytes)}, stream ${
      formatBytes(r.streamBytes)
    }`;
}

/** Backup: one file per disk, data = the engine's stream for that disk. */
export async function runBackup(ctx: JobContext): Promise<void> {
  const { ch, job } = ctx;
  const ej = await engineJob(ctx);
  if (!job.level) {
    throw new UsageError("the Bacula Job block has no Level: cannot choose full or incremental");
  }
  const started = Date.now();
  if (job.level !== "F") await checkBaculaBase(ctx, ej, job.level);
  await ctx.started();
  ch.watch();
  const files = new PtcommFiles(ch);
  const time = now();
  const vm = vmName(ctx.params);
  const sinkFor = (disk: PlannedDisk) =>
    Promise.resolve(
      files.sink(() =>
        sendAttributes(ch, backupFileName(vm, disk.diskName, disk.level, job.jobId), 0, time)
      ),
    );
  const running = ctx.engine.runBackup(ej, sinkFor);
  let results: DiskBackupResult[];
  try {
    results = await ch.guard(running);
  } catch (e) {
    // A cancelled engine still merges its bitmaps back: give it a moment before the process ends.
    if (ch.signal.aborted) await Promise.race([running.catch(() => {}), delay(CLEANUP_GRACE_MS)]);
    throw e;
  }
  await recordBaculaJob(ej.stateDir, {
    jobId: job.jobId,
    level: job.level,
    time: started,
    disks: Object.fromEntries(results.map((r) => [r.diskName, r.backupId])),
  });
  for (const r of results) await ch.say("I", statsMessage(r));
  await ch.eod();
}

/**
 * An Incremental or Differential job is restored on the job Bacula bases it
 * on: it stays one only if every disk's chain is at that job, else the whole
 * job becomes a full (which restarts the chain at restore).
 */
async function checkBaculaBase(ctx: JobContext, ej: EngineJob, level: "I" | "D"): Promise<void> {
  const problem = chainProblem(
    await loadBaculaJobs(ej.stateDir),
    level,
    ctx.job.since,
    await ctx.ch.guard(ctx.engine.estimateBackup(ej)),
  );
  if (problem) {
    const wanted = level === "D" ? "differential" : "incremental";
    await ctx.ch.say("W", `full backup instead of ${wanted}: ${problem}`);
    ej.level = "full";
  }
}

/** Estimate: the files a backup of this level would make, with the bytes it would read. */
export async function runEstimate(ctx: JobContext): Promise<void> {
  const { ch, job } = ctx;
  const ej = await engineJob(ctx);
  await ctx.started();
  const vm = vmName(ctx.params);
  const time = now();
  for (const e of await ch.guard(ctx.engine.estimateBackup(ej))) {
    await sendAttributes(ch, backupFileName(vm, e.diskName, e.level, job.jobId), e.bytes, time);
  }
  await ch.eod();
}

/** Listing: the namespace as a tree of directories, names relative to the listed path. */
export async function runListing(ctx: JobContext): Promise<void> {
  const { ch } = ctx;
  const ej = await engineJob(ctx);
  const path = `/${(ctx.params.listing ?? "/").replace(/^\/+|\/+$/g, "")}`;
  const vm = vmName(ctx.params);
  await ctx.started();
  let entries: string[] = [];
  if (path === "/") entries = [`${NAMESPACE}/`];
  else if (path === `/${NAMESPACE}`) entries = [`${vm}/`];
  else if (path === `/${NAMESPACE}/${vm}`) {
    entries = (await ch.guard(ctx.engine.estimateBackup(ej))).map((e) => `${e.diskName}/`);
  } else {
    await ch.say("W", `listing: nothing under ${path} (backups are in the catalog, not in the VM)`);
  }
  const time = now();
  for (const name of entries) {
    await ch.send(`FNAME:${name}`);
    await ch.send("STAT:D 0 0 0 040755 1");
    await ch.send(`TSTAMP:${time} ${time} ${time}`);
    await ch.eod();
  }
  await ch.eod();
}

/** Query: `disks` (name, level, expected bytes per disk) or `parameters` (the table as JSON). */
export async function runQuery(ctx: JobContext): Promise<void> {
  const { ch } = ctx;
  const name = ctx.params.query;
  if (name === "parameters") {
    await ctx.started();
    const table = Object.entries(PARAMS).map(([key, spec]) => ({ key, ...spec, check: undefined }));
    await ch.guard(ch.writer.send("D", JSON.stringify(table)));
  } else if (name === "disks") {
    const ej = await engineJob(ctx);
    await ctx.started();
    for (const e of await ch.guard(ctx.engine.estimateBackup(ej))) {
      await ch.send(`disk=${e.diskName},level=${e.level},bytes=${e.bytes}`);
    }
  } else {
    throw new UsageError(`parameter query=${name ?? ""}: unknown query, use disks or parameters`);
  }
  await ch.eod();
}
