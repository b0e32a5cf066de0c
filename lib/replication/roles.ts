/**
 * The per-disk role and state machine of failover, failback and reprotect
 * (docs/replication-protocol.md §10), kept on both sites as `NAME.role.json` in the sender's state
 * directory or the receiver's replica directory. Pure: the transitions and
 * the reasons for refusing one; the callers persist the result.
 *
 * ```
 *            original site (A)                      DR site (B)
 * normal     primary/replicating  --- cycles --->   replica/replicating
 * failover pre:  A primary/fenced   (final cycle; A sends no more)
 * failover exec:                                    B primary/promoted (VM runs at B)
 * failback pre:  A replica/resyncing -> replica/replicating   <--- differing blocks only ---
 *                                                   B primary/replicating (B -> A cycles)
 * failback exec: A primary/promoted  <--- final cycle ---   B replica/fenced
 * reprotect:     A primary/replicating  --- cycles --->   B replica/replicating
 * ```
 *
 * A cancelled failover (after `failover pre`, no `exec`) is undone by
 * `reprotect` at A as well. `failover pre` tells B that A is fenced
 * (`source_fenced`); without that, B promotes only when forced (A is lost:
 * `unfenced`), and A, when it returns, fences itself at its first contact
 * with the promoted replica (`fence`) and keeps its divergent writes aside
 * before the failback resync overwrites them.
 *
 * @module
 */
import { RoleError } from "../core/errors.ts";
import type { DiskCheckpoint } from "../qemu/mod.ts";

/** Which way the disk's data flows from this side. */
export type Role = "primary" | "replica";
/** Where the disk is in the failover cycle. */
export type RoleState = "replicating" | "fenced" | "promoted" | "resyncing";

/** A disk's role at one site. */
export interface DiskRole {
  name: string;
  role: Role;
  state: RoleState;
  /** The confirmed point (seed, cycle) this side's image equals, when fenced or promoted. */
  seedId?: string;
  cycle?: number;
  /** A fenced primary's disk: image, format and QEMU node, for failback into it. */
  image?: string;
  format?: "qcow2" | "raw";
  node?: string;
  /** Bitmaps added to the image when it was promoted back: reprotect starts from them. */
  checkpoint?: DiskCheckpoint;
  /** Promoted without the source fenced (`failover exec --force`): the source may have written on. */
  unfenced?: boolean;
  /** At the original site: where the failback kept this disk's divergent writes. */
  aside?: string;
  /** A step that was cut short after its first durable change: its rerun resumes here. */
  pending?: "promote";
  /** When the disk entered this state, and by which step. */
  since: string;
  step?: Step;
}

/** Everything that changes or needs a role. */
export type Step =
  | "cycle"
  | "receive"
  | "failover_pre"
  | "source_fenced"
  | "fence"
  | "failover_exec"
  | "failback_pre"
  | "resync"
  | "failback_exec"
  | "promote"
  | "reprotect"
  | "reprotect_target";

/** What each step needs, and what it leaves. */
const RULES: Record<
  Step,
  { from: `${Role}/${RoleState}`[]; to?: [Role, RoleState]; what: string; after?: Step }
> = {
  cycle: { from: ["primary/replicating"], what: "replication cycles from this side" },
  receive: { from: ["replica/replicating"], what: "receiving cycles into this replica" },
  failover_pre: {
    from: ["primary/replicating"],
    to: ["primary", "fenced"],
    what: "failover pre (final cycle, fence)",
  },
  source_fenced: {
    from: ["replica/replicating"],
    to: ["replica", "replicating"],
    what: "recording that the source is fenced",
  },
  fence: {
    from: ["primary/replicating"],
    to: ["primary", "fenced"],
    what: "fencing this disk (the DR site promoted its replica)",
  },
  failover_exec: {
    from: ["replica/replicating"],
    to: ["primary", "promoted"],
    what: "failover exec (promote the replica)",
  },
  failback_pre: {
    from: ["primary/promoted", "primary/replicating"],
    to: ["primary", "replicating"],
    what: "failback pre (resync the original primary)",
  },
  resync: {
    // replica/replicating: a resync whose confirmation the sender lost.
    from: ["primary/fenced", "replica/resyncing", "replica/replicating"],
    to: ["replica", "resyncing"],
    what: "a failback resync into this disk",
  },
  failback_exec: {
    from: ["primary/replicating"],
    to: ["replica", "fenced"],
    what: "failback exec (final sync, swap roles)",
    // Only the side that failed over and resynced the original primary.
    after: "failback_pre",
  },
  promote: {
    from: ["replica/replicating"],
    to: ["primary", "promoted"],
    what: "promotion back to primary",
  },
  reprotect: {
    from: ["primary/fenced", "primary/promoted"],
    to: ["primary", "replicating"],
    what: "reprotect from this side",
  },
  reprotect_target: {
    from: ["replica/fenced", "replica/replicating"],
    to: ["replica", "replicating"],
    what: "reprotect into this replica",
  },
};

/** The role a disk has before any failover: primary where it is sent from, replica where kept. */
export function initialRole(name: string, side: Role): DiskRole {
  return { name, role: side, state: "replicating", since: new Date(0).toISOString() };
}

/** Refuses `step` from a state it does not apply to, saying why and what to do. */
export function checkStep(current: DiskRole, step: Step): void {
  const rule = RULES[step];
  const now = `${current.role}/${current.state}`;
  if ((rule.from as string[]).includes(now) && (!rule.after || current.step === rule.after)) {
    return;
  }
  const since = current.step ? ` since ${current.step.replace("_", " ")} at ${current.since}` : "";
  throw new RoleError(
    `disk ${current.name} is ${now}${since}: ${rule.what} needs ${rule.from.join(" or ")}${
      rule.after ? ` after ${rule.after.replace("_", " ")}` : ""
    }${hint(current)}`,
  );
}

/** The role after `step` (checked first); `fields` records what the step learnt. */
export function applyStep(
  current: DiskRole,
  step: Step,
  fields: Partial<Omit<DiskRole, "name" | "role" | "state" | "since" | "step">> = {},
  now = new Date(),
): DiskRole {
  checkStep(current, step);
  const to = RULES[step].to;
  if (!to) return current;
  return { ...current, ...fields, role: to[0], state: to[1], since: now.toISOString(), step };
}

function hint(r: DiskRole): string {
  switch (`${r.role}/${r.state}`) {
    case "primary/fenced":
      return r.step === "fence"
        ? " (the DR site promoted its replica: run 'dirtybit failback pre' there to resync this disk)"
        : " (run 'dirtybit failover exec' at the DR site, or 'dirtybit reprotect' here to undo)";
    case "primary/promoted":
      return " (this side runs the VM: 'dirtybit failback pre' resyncs the other side)";
    case "replica/fenced":
      return " (run 'dirtybit reprotect' at the primary)";
    case "replica/resyncing":
      return " (a failback resync was interrupted: run 'dirtybit failback pre' again)";
    default:
      return "";
  }
}
