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
import { ChainError, RoleError, UsageError } from "../core/errors.ts";
import type { Notify } from "./notify.ts";
import { loadRole, saveRole } from "./role_file.ts";
import { applyStep, checkStep } from "./roles.ts";
import type { BatchStats } from "./batch.ts";
import {
  changeRemoteRole,
  diskImageOf,
  pushCycle,
  resyncDisk,
  type ResyncResult,
} from "./sender.ts";
import {
  freshState,
  loadSenderState,
  type ReplicatedDisk,
  type ReplicationTarget,
  saveSenderState,
} from "./sender_state.ts";
import { addImageCheckpoint, ReplicaStore } from "./store.ts";
import { libvirtXml, qemuScript } from "./vm_files.ts";

/**
 * Points right after a step's durable changes, where a crash leaves the
 * most to resume; crash tests stop the process there (a rerun of the same
 * step completes it).
 */
export type StepPoint =
  | "source-fenced"
  | "start-files-written"
  | "resynced"
  | "demoted"
  | "promoted"
  | "remote-reprotected";

/** Options every step takes. */
interface StepHooks {
  notify?: Notify;
  onPoint?: (point: StepPoint) => void;
}

/** A step run by a sender at its site (failover pre, failback pre/exec, reprotect). */
export interface SenderStepRequest extends StepHooks {
  disk: ReplicatedDisk;
  target: ReplicationTarget;
  /** zstd level of the data sent. */
  compressLevel: number;
}

/** Result of {@link failoverPre}. */
export interface FailoverPreResult {
  name: string;
  /** The final cycle, confirmed by the DR site. */
  cycle: number;
  /** Absent when a rerun found the cycle already sent. */
  stats?: BatchStats;
}

/**
 * `failover pre` at the original site: final cycle, fence the disk here, then
 * tell the DR site it is fenced at that cycle (so `failover exec` there needs
 * no `--force`). A rerun after a crash between the two tells the DR site again.
 */
export async function failoverPre(req: SenderStepRequest): Promise<FailoverPreResult> {
  const { disk, target } = req;
  let role = await loadRole(disk.stateDir, disk.name, "primary");
  let stats: BatchStats | undefined;
  if (!(role.state === "fenced" && role.step === "failover_pre")) {
    checkStep(role, "failover_pre");
    const r = await pushCycle(disk, target, sendOptions(req));
    stats = r.stats;
    const state = (await loadSenderState(disk.stateDir, disk.name))!;
    role = applyStep(role, "failover_pre", {
      seedId: state.seedId,
      cycle: r.cycle,
      ...await diskImageOf(disk.qmp, disk.node),
      node: disk.node,
    });
    await saveRole(disk.stateDir, role);
  }
  await changeRemoteRole(target, "fenced", disk.name, role.seedId!, role.cycle!);
  req.onPoint?.("source-fenced");
  req.notify?.(
    "done",
    `${disk.name}: final cycle ${role.cycle} confirmed` +
      `${stats ? ` (${stats.dirtyBytes} bytes dirty)` : ""}; fenced: ` +
      `no more cycles from here. Run 'dirtybit failover exec' at the DR site.`,
  );
  return { name: disk.name, cycle: role.cycle!, ...(stats ? { stats } : {}) };
}

/** Request of {@link failoverExec}, at the DR site. */
export interface FailoverExecRequest extends StepHooks {
  name: string;
  replicaDir: string;
  /** The VM the start files describe. */
  memoryMiB: number;
  cpus: number;
  /**
   * Promote although the source did not report itself fenced (it is lost):
   * the replica's last confirmed cycle is what the VM gets.
   */
  force?: boolean;
}

/** The recovery point of an unplanned failover: the last confirmed cycle. */
export interface RecoveryPoint {
  cycle: number;
  /** When it was applied here (ISO 8601), and how long before the promotion. */
  confirmedAt?: string;
  secondsBefore?: number;
  /** Bytes of disk that cycle changed. */
  cycleBytes?: number;
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
  /** Set when the source was not fenced (`force`): what the promotion may have lost. */
  unfenced?: RecoveryPoint;
  /** A rerun found the replica promoted already. */
  already?: boolean;
}

/**
 * `failover exec` at the DR site: the replica becomes the VM's disk. Needs
 * the source fenced at the replica's cycle (`failover pre` there), or
 * `force` when the source is lost; the role then records it as unfenced.
 */
export async function failoverExec(req: FailoverExecRequest): Promise<FailoverExecResult> {
  const { name, replicaDir: dir } = req;
  const role = await loadRole(dir, name, "replica");
  const already = role.state === "promoted" && role.step === "failover_exec";
  if (!already) checkStep(role, "failover_exec");
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
  const cycle = already ? role.cycle! : state.cycle;
  const point: RecoveryPoint = {
    cycle,
    ...(state.appliedAt
      ? {
        confirmedAt: state.appliedAt,
        secondsBefore: Math.max(0, Math.round((Date.now() - Date.parse(state.appliedAt)) / 1000)),
      }
      : {}),
    ...(state.lastCycleBytes === undefined ? {} : { cycleBytes: state.lastCycleBytes }),
  };
  const fenced = role.step === "source_fenced" && role.seedId === state.seedId &&
    role.cycle === state.cycle;
  if (!already && !fenced && !req.force) {
    throw new RoleError((p) =>
      `failover exec: the source of ${name} did not report itself fenced at cycle ${state.cycle} ` +
      `(run failover pre there); if the source site is lost, promote this ` +
      `replica as it is with failover exec and ${p("force")} (${rpoText(point)})`
    );
  }
  const image = await store.imagePath(name);
  const script = join(dir, `${name}.qemu.sh`);
  const xml = join(dir, `${name}.xml`);
  const unfenced = already ? role.unfenced === true : !fenced;
  const result: FailoverExecResult = {
    name,
    cycle,
    image,
    format: state.format,
    qemuScript: script,
    libvirtXml: xml,
    ...(unfenced ? { unfenced: point } : {}),
    ...(already ? { already } : {}),
  };
  if (!already) {
    const vm = { name, image, format: state.format, memoryMiB: req.memoryMiB, cpus: req.cpus };
    await Deno.writeTextFile(script, qemuScript(vm), { mode: 0o755 });
    await Deno.writeTextFile(xml, libvirtXml(vm));
    req.onPoint?.("start-files-written");
    // Bitmaps recording the DR VM's writes from its first one: failback then
    // reads only those and the original site's divergent blocks. The node is
    // the one `failback pre` names.
    const checkpoint = state.format === "qcow2"
      ? await addImageCheckpoint(image, name, `promoted-${state.seedId.slice(0, 8)}-${state.cycle}`)
      : undefined;
    await saveRole(
      dir,
      applyStep(role, "failover_exec", {
        seedId: state.seedId,
        cycle: state.cycle,
        image,
        format: state.format,
        ...(checkpoint ? { checkpoint } : {}),
        ...(unfenced ? { unfenced } : {}),
      }),
    );
  }
  if (unfenced) {
    req.notify?.(
      "progress",
      `${name}: promoted without fencing the source: ${rpoText(point)}; ` +
        `writes at the source after that are not here. When the source returns, its ` +
        `sender refuses to push over this replica and fences it; then run 'dirtybit failback pre' here`,
    );
  }
  req.notify?.(
    "done",
    `${name}: replica ${
      already ? "already " : ""
    }promoted at cycle ${cycle}: ${image}; start it with ` +
      `${script} or 'virsh define ${xml}'`,
  );
  return result;
}

/** The recovery point in words: the last confirmed cycle, its time and size. */
function rpoText(p: RecoveryPoint): string {
  const when = p.confirmedAt ? ` confirmed at ${p.confirmedAt} (${p.secondsBefore} s ago)` : "";
  const bytes = p.cycleBytes === undefined ? "" : `, which changed ${p.cycleBytes} bytes`;
  return `RPO: the last confirmed cycle ${p.cycle}${when}${bytes}`;
}

/** Result of {@link failbackPre}. */
export interface FailbackPreResult {
  name: string;
  /** The new seed both sides share, at cycle 0. */
  seedId: string;
  stats: BatchStats;
  /** Where the original site kept its own writes after its last cycle. */
  kept: ResyncResult["kept"];
}

/** `failback pre` at the DR site: resync the original primary's disk, differing blocks only. */
export async function failbackPre(req: SenderStepRequest): Promise<FailbackPreResult> {
  const { disk, target } = req;
  const role = await loadRole(disk.stateDir, disk.name, "replica");
  checkStep(role, "failback_pre");
  const r = await resyncDisk(disk, target, {
    ...sendOptions(req),
    ...(role.state === "promoted" && role.checkpoint && role.cycle !== undefined
      ? {
        sincePromotion: { checkpoint: { ...role.checkpoint, node: disk.node }, cycle: role.cycle },
      }
      : {}),
  });
  req.onPoint?.("resynced");
  await saveRole(
    disk.stateDir,
    applyStep(role, "failback_pre", { seedId: r.seedId, cycle: 0, unfenced: undefined }),
  );
  const s = r.stats;
  const k = r.kept;
  req.notify?.(
    "progress",
    k.path
      ? `${disk.name}: the original site kept ${
        k.whole
          ? "its whole disk (no hash DB of its last cycle)"
          : `${k.bytes} bytes it wrote after its last cycle`
      } aside in ${k.path} (at that site; 'qemu-img map' lists them)`
      : `${disk.name}: the original site wrote nothing after its last cycle`,
  );
  req.notify?.(
    "done",
    `${disk.name}: original primary resynced: ${s.dirtyBytes} bytes compared, ${s.unchangedBytes} equal, ` +
      `${s.dataBytes} sent as data (${s.payloadBytes} compressed); 'replicate push' keeps it current`,
  );
  return { name: disk.name, seedId: r.seedId, stats: s, kept: k };
}

/** Result of {@link failbackExec}. */
export interface FailbackExecResult {
  name: string;
  /** The final cycle to the original site. */
  cycle: number;
  /** The original site's role now, e.g. `primary/promoted`. */
  remoteRole: string;
}

/**
 * `failback exec` at the DR site: final cycle, then the original site is the
 * primary again. This side steps down first (replica/fenced, promotion
 * pending), then asks for the promotion: a crash in between leaves no side
 * primary, and a rerun finishes the promotion.
 */
export async function failbackExec(req: SenderStepRequest): Promise<FailbackExecResult> {
  const { disk, target } = req;
  let role = await loadRole(disk.stateDir, disk.name, "replica");
  const resumed = role.state === "fenced" && role.step === "failback_exec";
  if (!resumed) {
    checkStep(role, "failback_exec");
    const r = await pushCycle(disk, target, sendOptions(req));
    const state = (await loadSenderState(disk.stateDir, disk.name))!;
    role = applyStep(role, "failback_exec", {
      seedId: state.seedId,
      cycle: r.cycle,
      pending: "promote",
    });
    await saveRole(disk.stateDir, role);
    req.onPoint?.("demoted");
  }
  let remote = "primary/promoted";
  if (role.pending) {
    remote = await changeRemoteRole(target, "promote", disk.name, role.seedId!, role.cycle!);
    req.onPoint?.("promoted");
    const { pending: _done, ...rest } = role;
    await saveRole(disk.stateDir, rest);
  }
  req.notify?.(
    "done",
    `${disk.name}: final cycle ${role.cycle} confirmed; the original site is ${remote}, this side ` +
      `replica/fenced. Start the VM there, then run 'dirtybit reprotect' there.`,
  );
  return { name: disk.name, cycle: role.cycle!, remoteRole: remote };
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
  if (role.state === "replicating" && role.step === "reprotect") {
    req.notify?.("done", `${disk.name}: already reprotected at cycle ${role.cycle}`);
    return { name: disk.name, seedId: role.seedId!, cycle: role.cycle!, remoteRole: "unchanged" };
  }
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
  req.onPoint?.("remote-reprotected");
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
