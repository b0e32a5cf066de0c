/**
 * Replication jobs (`mode=`): the plugin parameters translated into the
 * requests of the replication use cases (lib/replication), run as a Backup
 * job. The job's progress goes into its job messages; what it did is its one
 * virtual file, a small JSON record (recordFileName), so the catalog keeps
 * the history. A failed step fails the job. `receiver` and `daemon` make
 * sure the long-running process runs (started detached, with a pid file and
 * a log under the state directory) and report it.
 *
 * @module
 */
import { join } from "node:path";
import { UsageError } from "../core/errors.ts";
import { ensureDetached, selfCommand } from "../core/detached.ts";
import { writeFileAtomic } from "../core/atomic_file.ts";
import { makeDirectory } from "../core/files.ts";
import { isReplicaName, REPLICA_NAME_RULE } from "../replication/messages.ts";
import { QmpSocket } from "../qemu/qmp.ts";
import type { Notify } from "../replication/notify.ts";
import { pushCycles, seedOnce } from "../replication/push.ts";
import {
  failbackExec,
  failbackPre,
  failoverExec,
  failoverPre,
  reprotect,
  type SenderStepRequest,
} from "../replication/failover.ts";
import { loadSenderState, senderWorkDir } from "../replication/sender_state.ts";
import { compressLevelOf, loadPsk, parseHostPort, retryPolicyOf } from "../replication/setup.ts";
import { replicationStatus } from "../replication/status_query.ts";
import { toText } from "../replication/status.ts";
import { type JobContext, sendAttributes, stateDirOf } from "./backup.ts";
import { recordFileName } from "./names.ts";
import { backendProcessDir } from "../params/state_dir.ts";

type Params = JobContext["params"];

/** A `mode=` that is not a plain backup. */
export type ReplicationMode = Exclude<NonNullable<Params["mode"]>, "backup">;

/** The job's replication mode, or undefined for a backup or restore. */
export function replicationMode(params: Params): ReplicationMode | undefined {
  return params.mode === "backup" ? undefined : params.mode;
}

/** A mode's work once its parameters are checked; resolves to what goes in the record. */
type Run = (notify: Notify, signal: AbortSignal) => Promise<unknown>;

/** Checks a mode's parameters (and loads its key): the job fails before it starts if they are wrong. */
type Plan = (p: Params, ctx: JobContext) => Promise<{ name: string; run: Run }>;

const DEFAULT_DR_PORT = 10900;

function need<T>(value: T | undefined, p: Params, key: string, what: string): T {
  if (value === undefined) {
    throw new UsageError(`mode=${p.mode}: parameter ${key} is missing: give ${key}=${what}`);
  }
  return value;
}

/** A replica name (it becomes file names at both sites), else the job fails naming it. */
function replicaName(p: Params, name: string): string {
  if (!isReplicaName(name)) {
    throw new UsageError(
      `mode=${p.mode}: replica name '${name}' must be ${REPLICA_NAME_RULE}: give name=NAME`,
    );
  }
  return name;
}

/** The sender side of a step: the disk (its QMP connected by `run`), where it goes, the key. */
async function senderPlan(
  p: Params,
  ctx: JobContext,
  step: (req: SenderStepRequest, signal: AbortSignal) => Promise<unknown>,
): Promise<{ name: string; run: Run }> {
  const qmpPath = need(p.qmp, p, "qmp", "SOCKET (the QMP socket of the disk's QEMU)");
  const node = need(p.node, p, "node", "NODE (the disk's block node)");
  if (node.length !== 1) throw new UsageError(`mode=${p.mode}: give exactly one node=NODE`);
  const host = need(p.dr_host, p, "dr_host", "HOST (where the receiver listens)");
  const psk = await loadPsk(
    p,
    `mode=${p.mode}: parameter psk_file is missing: give psk_file=FILE with the pre-shared key`,
  );
  const name = replicaName(p, p.name ?? node[0]);
  const stateDir = stateDirOf(p, ctx.workDir);
  const target = {
    host,
    port: p.dr_port ?? DEFAULT_DR_PORT,
    psk,
    bandwidthBytesPerSecond: p.bandwidth_limit,
    retry: retryPolicyOf(p),
  };
  const compressLevel = compressLevelOf(p.compress, `mode=${p.mode}`);
  return {
    name,
    run: async (notify, signal) => {
      const workDir = p.work_dir ?? senderWorkDir(stateDir, name);
      await makeDirectory(workDir, "the work directory");
      const qmp = await QmpSocket.connect(qmpPath);
      try {
        const disk = { qmp, node: node[0], name, stateDir, workDir, nbdSocket: p.nbd_socket };
        return await step({ disk, target, compressLevel, notify }, signal);
      } finally {
        await qmp.close();
      }
    },
  };
}

/** Runs dirtybit `args` detached as BASE (see ensureDetached) and reports it. */
function detachedRun(
  base: string,
  args: string[],
  ready: RegExp,
  prepare?: () => Promise<void>,
): Run {
  return async (notify) => {
    const argv = [...selfCommand(), ...args];
    const r = await ensureDetached({ base, argv, ready, prepare });
    notify(
      "done",
      `${args.slice(0, 2).join(" ")} ${r.already ? "already runs" : "started"} as pid ${r.pid}` +
        ` (log ${r.logFile}, pid file ${r.pidFile})`,
    );
    return { ...r, args };
  };
}

const PLANS: Record<ReplicationMode, Plan> = {
  seed: (p, ctx) =>
    senderPlan(
      p,
      ctx,
      (req) =>
        seedOnce({ ...req, options: { compressLevel: req.compressLevel }, notify: req.notify }),
    ),
  bitmap_push: (p, ctx) =>
    senderPlan(p, ctx, async (req, signal) => {
      const { disk, target, compressLevel, notify } = req;
      await pushCycles({
        disk,
        target,
        options: { compressLevel },
        notify,
        cycles: 1,
        intervalMs: 0,
        signal,
      });
      return (await loadSenderState(disk.stateDir, disk.name))?.lastCycle;
    }),
  failover_pre: (p, ctx) => senderPlan(p, ctx, failoverPre),
  failback_pre: (p, ctx) => senderPlan(p, ctx, failbackPre),
  failback_exec: (p, ctx) => senderPlan(p, ctx, failbackExec),
  reprotect: (p, ctx) => senderPlan(p, ctx, reprotect),
  failover_exec: (p) => {
    const name = replicaName(p, need(p.name, p, "name", "NAME (the replica)"));
    const replicaDir = need(p.replica_dir, p, "replica_dir", "DIR (the receiver's replicas)");
    return Promise.resolve({
      name,
      run: (notify) =>
        failoverExec({
          name,
          replicaDir,
          memoryMiB: p.memory!,
          cpus: p.cpus!,
          force: p.force === true,
          notify,
        }),
    });
  },
  replication_status: async (p, ctx) => {
    const remote = p.dr_host
      ? {
        host: p.dr_host,
        port: p.dr_port ?? DEFAULT_DR_PORT,
        psk: await loadPsk(p, "mode=replication_status with dr_host: give psk_file=FILE"),
      }
      : undefined;
    return {
      name: p.name ?? "status",
      run: async (notify) => {
        const rows = await replicationStatus(remote ?? { stateDir: stateDirOf(p, ctx.workDir) });
        const mine = p.name ? rows.filter((r) => r.name === p.name) : rows;
        notify("done", toText(mine).trim());
        return { source: remote ? `${remote.host}:${remote.port}` : "state_dir", disks: mine };
      },
    };
  },
  receiver: (p, ctx) => {
    const replicaDir = need(p.replica_dir, p, "replica_dir", "DIR (where replicas are kept)");
    const pskFile = keyFile(p);
    const listen = p.listen!;
    const { port } = parseHostPort(listen, "parameter listen", DEFAULT_DR_PORT);
    const name = p.name ?? `receiver-${port}`;
    const args = [
      "replicate",
      "receive",
      "--listen",
      listen,
      "--psk-file",
      pskFile,
      "--replica-dir",
      replicaDir,
      "--replica-format",
      p.replica_format!,
    ];
    const base = join(backendProcessDir(p.state_dir, ctx.workDir), name);
    return Promise.resolve({ name, run: detachedRun(base, args, /listening on /) });
  },
  daemon: (p, ctx) => {
    const qmp = need(p.qmp, p, "qmp", "SOCKET (the QMP socket of the disk's QEMU)");
    const node = need(p.node, p, "node", "NODE (the disk's block node)");
    if (node.length !== 1) throw new UsageError(`mode=daemon: give exactly one node=NODE`);
    const drHost = need(p.dr_host, p, "dr_host", "HOST (where the receiver listens)");
    const name = replicaName(p, p.name ?? node[0]);
    const base = join(backendProcessDir(p.state_dir, ctx.workDir), `daemon-${name}`);
    const config = `${base}.json`;
    const disk = {
      name,
      qmp,
      node: node[0],
      ...(p.nbd_socket ? { nbd_socket: p.nbd_socket } : {}),
      dr_host: drHost,
      dr_port: p.dr_port ?? DEFAULT_DR_PORT,
      psk_file: keyFile(p),
      state_dir: stateDirOf(p, ctx.workDir),
      cycle_interval: p.cycle_interval,
      ...(p.bandwidth_limit ? { bandwidth_limit: `${p.bandwidth_limit}B` } : {}),
      retry_count: p.retry_count,
      retry_delay_ms: p.retry_delay_ms,
      retry_jitter_ms: p.retry_jitter_ms,
      compress: p.compress,
    };
    const text = JSON.stringify({ disks: [disk] }, null, 2) + "\n";
    return Promise.resolve({
      name,
      run: detachedRun(
        base,
        ["replicate", "daemon", "--config", config],
        /daemon: \d+ disks/,
        () => writeFileAtomic(config, text),
      ),
    });
  },
};

/** A long-running process gets the key as a file: a key on its command line shows in ps. */
function keyFile(p: Params): string {
  if (p.psk_file) return p.psk_file;
  throw new UsageError(
    `mode=${p.mode}: give the pre-shared key as psk_file=FILE (psk= would show in ps of the process)`,
  );
}

/** The record of a job, before and after its step. */
function record(ctx: JobContext, mode: ReplicationMode, name: string, result?: unknown) {
  const { job } = ctx;
  return JSON.stringify(
    { mode, name, job: job.name, jobId: job.jobId, at: new Date().toISOString(), result },
    null,
    2,
  ) + "\n";
}

const now = () => Math.floor(Date.now() / 1000);

/** A replication Backup job: the step, its messages, then its record as the job's one file. */
export async function runModeJob(ctx: JobContext): Promise<void> {
  const { ch, params } = ctx;
  const mode = replicationMode(params)!;
  const plan = await PLANS[mode](params, ctx);
  await ctx.started();
  ch.watch();
  const notify: Notify = (_kind, text) => {
    for (const line of text.split("\n")) void ch.say("I", line).catch(() => {});
  };
  const result = await ch.guard(plan.run(notify, ch.signal));
  const bytes = new TextEncoder().encode(record(ctx, mode, plan.name, result));
  await sendAttributes(ch, recordFileName(plan.name, mode, ctx.job.jobId), bytes.length, now());
  await ch.send("DATA");
  await ch.guard(ch.writer.send("D", bytes));
  await ch.eod();
  await ch.eod();
}

/** Estimate of a replication job: its record file, sized as a record without a result. */
export async function runModeEstimate(ctx: JobContext): Promise<void> {
  const mode = replicationMode(ctx.params)!;
  const plan = await PLANS[mode](ctx.params, ctx);
  await ctx.started();
  const size = new TextEncoder().encode(record(ctx, mode, plan.name)).length;
  await sendAttributes(ctx.ch, recordFileName(plan.name, mode, ctx.job.jobId), size, now());
  await ctx.ch.eod();
}
