/**
 * `replicate status`: per disk, the last confirmed cycle, lag (RPO: time
 * since the last confirmed cycle), bytes sent against bytes dirty, and
 * errors — as text, JSON or Prometheus text metrics. Pure.
 *
 * @module
 */
import type { SenderState } from "./sender_state.ts";
import type { StateMessage } from "./messages.ts";

/** One disk's status line. */
export interface DiskStatus {
  name: string;
  /** The disk's failover role at this site, e.g. `primary/replicating` (roles.ts). */
  role: string;
  /** `seeding` until the seed is confirmed (cycle 0), then `replicating`. */
  phase: "seeding" | "replicating";
  /** Last confirmed cycle (0 = seed), null while not seeded. */
  confirmedCycle: number | null;
  confirmedAt: string | null;
  /** Seconds since the last confirmed cycle: the current recovery point. */
  lagSeconds: number | null;
  /** While seeding: bytes of the disk that are durable at the receiver. */
  seedOffset: number | null;
  dirtyBytes: number;
  payloadBytes: number;
  wireBytes: number;
  cycles: number;
  errors: number;
  lastError: string | null;
}

/** Status rows from sender state files; `roles` by disk name (default `primary/replicating`). */
export function senderStatus(
  states: SenderState[],
  now: Date,
  roles: ReadonlyMap<string, string> = new Map(),
): DiskStatus[] {
  return states.map((s) => ({
    name: s.name,
    role: roles.get(s.name) ?? "primary/replicating",
    phase: phaseOf(s.confirmedCycle),
    confirmedCycle: s.confirmedCycle ?? null,
    confirmedAt: s.confirmedAt ?? null,
    lagSeconds: lagOf(s.confirmedAt, now),
    seedOffset: s.seedOffset ?? null,
    dirtyBytes: s.totals.dirtyBytes,
    payloadBytes: s.totals.payloadBytes,
    wireBytes: s.totals.wireBytes,
    cycles: s.totals.cycles,
    errors: s.errors,
    lastError: s.lastError ?? null,
  }));
}

/**
 * Status rows from a receiver's answer: confirmed is what it applied, the
 * traffic what it received (a receiver of an older version sends no stats:
 * nulls and zeros then).
 */
export function receiverStatus(replicas: StateMessage[], now: Date): DiskStatus[] {
  return replicas.map((r) => ({
    name: r.name,
    role: r.role?.role ?? "replica/replicating",
    phase: phaseOf(r.cycle),
    confirmedCycle: r.cycle ?? null,
    confirmedAt: r.stats?.appliedAt ?? null,
    lagSeconds: lagOf(r.stats?.appliedAt, now),
    seedOffset: r.seedOffset ?? null,
    dirtyBytes: r.stats?.dirtyBytes ?? 0,
    payloadBytes: r.stats?.payloadBytes ?? 0,
    wireBytes: r.stats?.wireBytes ?? 0,
    cycles: r.stats?.cycles ?? 0,
    errors: r.stats?.errors ?? 0,
    lastError: r.stats?.lastError ?? null,
  }));
}

/** Seconds from `at` to `now`: the recovery point's age. */
function lagOf(at: string | undefined, now: Date): number | null {
  return at ? Math.max(0, (now.getTime() - Date.parse(at)) / 1000) : null;
}

function phaseOf(confirmedCycle: number | undefined): DiskStatus["phase"] {
  return confirmedCycle === undefined ? "seeding" : "replicating";
}

/** Prometheus text exposition format. */
export function toPrometheus(rows: DiskStatus[]): string {
  const metrics: [string, string, (r: DiskStatus) => number | null][] = [
    [
      "dirtybit_replication_confirmed_cycle",
      "last confirmed cycle (0 = seed)",
      (r) => r.confirmedCycle,
    ],
    [
      "dirtybit_replication_lag_seconds",
      "seconds since the last confirmed cycle",
      (r) => r.lagSeconds,
    ],
    [
      "dirtybit_replication_seed_offset_bytes",
      "bytes of an unfinished seed durable at the receiver",
      (r) => r.seedOffset,
    ],
    ["dirtybit_replication_dirty_bytes_total", "dirty bytes replicated", (r) => r.dirtyBytes],
    [
      "dirtybit_replication_payload_bytes_total",
      "compressed data bytes sent",
      (r) => r.payloadBytes,
    ],
    ["dirtybit_replication_wire_bytes_total", "bytes sent on the wire", (r) => r.wireBytes],
    ["dirtybit_replication_cycles_total", "confirmed cycles", (r) => r.cycles],
    ["dirtybit_replication_errors_total", "failed attempts", (r) => r.errors],
  ];
  const lines: string[] = [];
  for (const [metric, help, value] of metrics) {
    const type = metric.endsWith("_total") ? "counter" : "gauge";
    lines.push(`# HELP ${metric} ${help}`, `# TYPE ${metric} ${type}`);
    for (const r of rows) {
      const v = value(r);
      if (v !== null) lines.push(`${metric}{disk="${r.name}"} ${v}`);
    }
  }
  return lines.join("\n") + "\n";
}

/** One line per disk for people. */
export function toText(rows: DiskStatus[]): string {
  if (rows.length === 0) return "no replicated disks\n";
  return rows.map((r) => {
    const where = r.phase === "seeding"
      ? `seeding${r.seedOffset !== null ? ` (${r.seedOffset} bytes durable)` : ""}`
      : `cycle ${r.confirmedCycle}`;
    const lag = r.lagSeconds === null ? "" : `, lag ${Math.round(r.lagSeconds)} s`;
    const traffic = r.cycles ? `, ${r.wireBytes} bytes sent for ${r.dirtyBytes} dirty` : "";
    const errors = r.errors ? `, ${r.errors} errors (last: ${r.lastError})` : "";
    // Only a role that stops cycles is news.
    const role = r.role.endsWith("/replicating") ? "" : ` (${r.role})`;
    return `${r.name}${role}: ${where}${lag}${traffic}${errors}`;
  }).join("\n") + "\n";
}
