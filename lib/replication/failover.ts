/**
 * The failover, failback and reprotect use cases (the role changes of
 * roles.ts on top of the replication channel). Each takes a typed request,
 * checks the disk's role at its site first, refuses the wrong state with the
 * reason, and returns a typed result; progress goes through `notify`, never
 * to a terminal. Front ends (lib/cli/failover.ts, the Bacula plugin) only
 * translate their input into these requests.
 *
 * @module
 */
import { join } from "node:path";
import { ChainError, UsageError } from "../core/errors.ts";
import { type QmpTransport, queryBlockNode } from "../qemu/mod.ts";
import { loadRole, saveRole } from "./role_file.ts";
import { applyStep, checkStep } from "./roles.ts";
import {
  type BatchStats,
  changeRemoteRole,
  freshState,
  loadSenderState,
  pushCycle,
  type ReplicatedDisk,
  type ReplicationTarget,
  resyncDisk,
  saveSenderState,
} from "./sender.ts";
import { ReplicaStore } from "./store.ts";
import { libvirtXml, qemuScript } from "./vm_files.ts";

/** What a use case tells its caller while it runs: progress lines and the final summary. */
export type Notify = (kind: "progress" | "done", text: string) => void;

/** A step run by a sender at its site (failover pre, failback pre/exec, reprotect). */
export interface SenderStepRequest {
  disk: ReplicatedDisk;
  target: ReplicationTarget;
  /** zstd level of the data sent. */
  compressLevel: number;
  notify?: Notify;
}

/** Result of {@link failoverPre}. */
export interface FailoverPreResult {
  name: string;
  /** The final cycle, confirmed by the DR site. */
  cycle: number;
  stats: BatchStats;
}

/** `failover pre` at the original site: final cycle, then fence the disk. */
export async function failoverPre(req: SenderStepRequest): Promise<FailoverPreResult> {
  const { disk, target } = req;
  const role = await loadRole(disk.stateDir, disk.name, "primary");
  checkStep(role, "failover_pre");
  const r = await pushCycle(disk, target, sendOptions(req));
  const state = (await loadSenderState(disk.stateDir, disk.name))!;
  const image = await imageOf(disk.qmp, disk.node);
  await saveRole(
    disk.stateDir,
    applyStep(role, "failover_pre", {
      seedId: state.seedId,
      cycle: r.cycle,
      ...image,
      node: disk.node,
    }),
  );
  req.notify?.(
    "done",
    `${disk.name}: final cycle ${r.cycle} confirmed (${r.stats.dirtyBytes} bytes dirty); fenced: ` +
      `no more cycles from here. Run 'dirtybit failover exec' at the DR site.`,
  );
  return { name: disk.name, cycle: r.cycle, stats: r.stats };
}

/** The image file and format QEMU opens for `node` (failback writes into it). */
async function imageOf(
  qmp: QmpTransport,
  node: string,
): Promise<{ image: string; format: "qcow2" | "raw" }> {
  const n = await queryBlockNode(qmp, node);
  if (n.driver !== "qcow2" && n.driver !== "raw") {
    throw new UsageError(
      `failover pre: node ${node} is ${n.driver}: failback supports qcow2 and raw`,
    );
  }
  return { image: n.filename, format: n.driver };
}

/** Request of {@link failoverExec}, at the DR site. */
export interface FailoverExecRequest {
  name: string;
  replicaDir: string;
  /** The VM the start files describe. */
  memoryMiB: number;
  cpus: number;
  notify?: Notify;
}

/** Result of {@link failoverExec}. */
export interface FailoverExecResult {
  name: string;
  /** The confirmed cycle the replica was promoted at. */
  cycle: number;
  image: string;
  format: "qcow2" | "raw";
  /** `qemu-system-x86_64` start script and libvirt domain XML written beside the image. */
  qemuScript: string;
  libvirtXml: string;
}

/** `failover exec` at the DR site: the replica becomes the VM's disk. */
export async function failoverExec(req: FailoverExecRequest): Promise<FailoverExecResult> {
  const { name, replicaDir: dir } = req;
  const role = await loadRole(dir, name, "replica");
  checkStep(role, "failover_exec");
  // Opening the store finishes a cycle that a crash left journaled.
  const { store, recovered } = await ReplicaStore.open(dir, { format: "qcow2" });
  for (const r of recovered) {
    req.notify?.("progress", `${r.name}: ${r.action} the journal of cycle ${r.cycle}`);
  }
  const state = await store.state(name);
  if (!state) throw new UsageError(`failover exec: there is no replica ${name} in ${dir}`);
  if (state.cycle === undefined) {
    throw new ChainError(`failover exec: replica ${name} is still seeding: it is no copy yet`);
  }
  const image = await store.imagePath(name);
  const vm = { name, image, format: state.format, memoryMiB: req.memoryMiB, cpus: req.cpus };
  const script = join(dir, `${name}.qemu.sh`);
  const xml = join(dir, `${name}.xml`);
  await Deno.writeTextFile(script, qemuScript(vm), { mode: 0o755 });
  await Deno.writeTextFile(xml, libvirtXml(vm));
  await saveRole(
    dir,
    applyStep(role, "failover_exec", {
      seedId: state.seedId,
      cycle: state.cycle,
      image,
      format: state.format,
    }),
  );
  req.notify?.(
    "done",
    `${name}: replica promoted at cycle ${state.cycle}: ${image}; start it with ` +
      `${script} or 'virsh define ${xml}'`,
  );
  return {
    name,
    cycle: state.cycle,
    image,
    format: state.format,
    qemuScript: script,
    libvirtXml: xml,
  };
}

/** Result of {@link failbackPre}. */
export interface FailbackPreResult {
  name: string;
  /** The new seed both sides share, at cycle 0. */
  seedId: string;
  stats: BatchStats;
}

/** `failback pre` at the DR site: resync the original primary's disk, differing blocks only. */
export async function failbackPre(req: SenderStepRequest): Promise<FailbackPreResult> {
  const { disk, target } = req;
  const role = await loadRole(disk.stateDir, disk.name, "replica");
  checkStep(role, "failback_pre");
  const r = await resyncDisk(disk, target, sendOptions(req));
  await saveRole(disk.stateDir, applyStep(role, "failback_pre", { seedId: r.seedId, cycle: 0 }));
  const s = r.stats;
  req.notify?.(
    "done",
    `${disk.name}: original primary resynced: ${s.dirtyBytes} bytes compared, ${s.unchangedBytes} equal, ` +
      `${s.dataBytes} sent as data (${s.payloadBytes} compressed); 'replicate push' keeps it current`,
  );
  return { name: disk.name, seedId: r.seedId, stats: s };
}

/** Result of {@link failbackExec}. */
export interface FailbackExecResult {
  name: string;
  /** The final cycle to the original site. */
  cycle: number;
  /** The original site's role now, e.g. `primary/promoted`. */
  remoteRole: string;
}

/** `failback exec` at the DR site: final cycle, then the original site is the primary again. */
export async function failbackExec(req: SenderStepRequest): Promise<FailbackExecResult> {
  const { disk, target } = req;
  const role = await loadRole(disk.stateDir, disk.name, "replica");
  checkStep(role, "failback_exec");
  const r = await pushCycle(disk, target, sendOptions(req));
  const state = (await loadSenderState(disk.stateDir, disk.name))!;
  const remote = await changeRemoteRole(target, "promote", disk.name, state.seedId!, r.cycle);
  await saveRole(
    disk.stateDir,
    applyStep(role, "failback_exec", { seedId: state.seedId, cycle: r.cycle }),
  );
  req.notify?.(
    "done",
    `${disk.name}: final cycle ${r.cycle} confirmed; the original site is ${remote}, this side ` +
      `replica/fenced. Start the VM there, then run 'dirtybit reprotect' there.`,
  );
  return { name: disk.name, cycle: r.cycle, remoteRole: remote };
}

/** Result of {@link reprotect}. */
export interface ReprotectResult {
  name: string;
  seedId: string;
  /** The confirmed point both sides share; cycles from here follow it. */
  cycle: number;
  remoteRole: string;
}

/**
 * `reprotect` at the side that stays primary: replication from here again,
 * without a full copy (after failback exec, or to undo a failover pre).
 */
export async function reprotect(req: SenderStepRequest): Promise<ReprotectResult> {
  const { disk, target } = req;
  const role = await loadRole(disk.stateDir, disk.name, "primary");
  checkStep(role, "reprotect");
  const state = await loadSenderState(disk.stateDir, disk.name);
  // Undoing a failover pre: this sender's own seed and last cycle. After a
  // failback: the point the promotion recorded.
  const seedId = role.state === "fenced" ? state?.seedId : role.seedId;
  const cycle = role.state === "fenced" ? state?.confirmedCycle : role.cycle;
  if (seedId === undefined || cycle === undefined) {
    throw new ChainError(`reprotect: disk ${disk.name} has no confirmed cycle here: seed it`);
  }
  const remote = await changeRemoteRole(target, "reprotect", disk.name, seedId, cycle);
  if (role.state === "promoted") {
    if (!role.checkpoint) {
      req.notify?.(
        "progress",
        `${disk.name}: no checkpoint bitmap (raw image): the next cycle sends the whole disk`,
      );
    }
    await saveSenderState(disk.stateDir, {
      ...freshState(disk, target),
      seedId,
      confirmedCycle: cycle,
      confirmedAt: new Date().toISOString(),
      ...(role.checkpoint ? { checkpoint: { ...role.checkpoint, node: disk.node } } : {}),
    });
  }
  await saveRole(disk.stateDir, applyStep(role, "reprotect", { seedId, cycle }));
  req.notify?.(
    "done",
    `${disk.name}: reprotected at cycle ${cycle}: this side primary/replicating, the other ${remote}; ` +
      `'replicate push' or the daemon sends the cycles`,
  );
  return { name: disk.name, seedId, cycle, remoteRole: remote };
}

function sendOptions(req: SenderStepRequest) {
  return {
    log: (line: string) => req.notify?.("progress", line),
    compressLevel: req.compressLevel,
  };
}
