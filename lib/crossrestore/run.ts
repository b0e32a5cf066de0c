/**
 * The one cross-restore entry point both front ends call: the target-only
 * checks before any data ({@link planCrossRestore}), then
 * ({@link runCrossRestore}) the chains opened, the VM definition with its
 * overrides, the target's choices and preflight warnings, the destination
 * opened and the push dispatched to the target.
 *
 * @module
 */
import { UsageError } from "../core/errors.ts";
import { withReadProgress } from "../core/source.ts";
import { openChains } from "./chains.ts";
import { type Destination, type DestSpec, LocalDestination, parseDest } from "./destination.ts";
import { CROSS_RESTORE_TARGETS, findTarget, ownerOf, type TargetOption } from "./registry.ts";
import type { TargetOptions } from "./registry.ts";
import { posixDialect, powershellDialect } from "./remote_dialect.ts";
import { RemoteDestination } from "./remote_destination.ts";
import type { CrossRestoreTarget, TargetResult } from "./target.ts";
import { applyOverrides, type VmOverrides } from "../model/vm_definition.ts";
import type { MessageKind } from "../core/log.ts";

/** How a front end names an option and a target in its messages. */
export interface Spelling {
  option(option: TargetOption): string;
  target(name: string): string;
}

/** A checked target. */
export interface CrossRestorePlan {
  target: CrossRestoreTarget<TargetOptions>;
}

/**
 * Checks the target and that no option of another target is `given`,
 * before any stream is read; the messages name things as `spell` does.
 */
export function planCrossRestore(
  name: string,
  given: readonly TargetOption[],
  spell: Spelling,
): CrossRestorePlan {
  const target = findTarget(name);
  if (!target) {
    throw new UsageError(
      `unknown cross-restore target '${name}': use one of ${CROSS_RESTORE_TARGETS.join(", ")}`,
    );
  }
  const foreign = given.find((o) => !(target.options as readonly string[]).includes(o));
  if (foreign) {
    throw new UsageError(
      `${spell.option(foreign)} applies to ${spell.target(ownerOf(foreign))} only`,
    );
  }
  return { target };
}

/**
 * Parses the destination and checks the parameters that go with it, before
 * any stream is read: an ssh:// one needs a key, a shell is only for one.
 */
export function planDestination(
  dest: string,
  given: { sshKey: boolean; remoteShell: boolean },
): DestSpec {
  const spec = parseDest(dest);
  if (spec.kind === "ssh" && !given.sshKey) {
    throw new UsageError((p) => `restore: an ssh:// ${p("dest")} needs ${p("dest_ssh_key")} FILE`);
  }
  if (spec.kind === "local" && given.remoteShell) {
    throw new UsageError((p) => `restore: ${p("remote_shell")} needs an ssh:// ${p("dest")}`);
  }
  return spec;
}

/** Progress of a running cross-restore. */
export interface CrossRestoreProgress {
  /** One line of progress. */
  line(text: string): void;
  /** Bytes of a disk's chain read so far (an OVA reads twice: it measures, then writes). */
  read?(disk: string, done: number, total: number): void;
}

/** What to restore, where. */
export interface CrossRestoreRequest {
  /** The chains' stream files (per disk: the full, then its incrementals). */
  streams: readonly string[];
  /** The target's options (only its own: see {@link planCrossRestore}). */
  options: Partial<TargetOptions>;
  dest: DestSpec;
  /** The key and known_hosts of an ssh:// destination. */
  ssh?: { keyPath: string; knownHostsPath?: string };
  /** The shell of an ssh:// destination; default the target's. */
  remoteShell?: "posix" | "powershell";
  register: boolean;
  overrides?: VmOverrides;
  /** The chains' notes and the preflight warnings, before the destination is opened. */
  onMessage(kind: MessageKind, text: string): void | Promise<void>;
  /** Called once the destination is open, before the first disk is read. */
  startProgress(): Promise<CrossRestoreProgress>;
}

/** Restores the chains as a VM of the planned target. */
export async function runCrossRestore(
  plan: CrossRestorePlan,
  request: CrossRestoreRequest,
): Promise<TargetResult> {
  const chains = await openChains([...request.streams]);
  let dest: Destination | undefined;
  try {
    const definition = request.overrides
      ? applyOverrides(chains.definition, request.overrides)
      : chains.definition;
    const prepared = plan.target.prepare(definition, request.options as TargetOptions);
    for (const note of chains.notes) await request.onMessage("info", note);
    for (const w of prepared.warnings) await request.onMessage("warning", w);
    dest = await openDestination(request, plan.target.shell);
    const progress = await request.startProgress();
    const read = progress.read;
    const disks = read
      ? chains.disks.map((d) => ({
        ...d,
        source: withReadProgress(d.source, (done, total) => read(d.disk.name, done, total)),
      }))
      : chains.disks;
    return await prepared.restore({
      dest,
      chains: { ...chains, disks, definition },
      register: request.register,
      progress: progress.line,
    });
  } finally {
    await dest?.close();
    await chains.close();
  }
}

async function openDestination(
  request: CrossRestoreRequest,
  defaultShell: "posix" | "powershell",
): Promise<Destination> {
  const spec = request.dest;
  if (spec.kind === "local") return new LocalDestination(spec.dir);
  const shell = request.remoteShell ?? defaultShell;
  return await RemoteDestination.connect({
    target: {
      host: spec.host,
      port: spec.port,
      user: spec.user,
      keyPath: request.ssh!.keyPath,
      knownHostsPath: request.ssh!.knownHostsPath,
    },
    root: spec.path,
    dialect: shell === "posix" ? posixDialect : powershellDialect,
  });
}
