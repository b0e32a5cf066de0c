/**
 * What every cross-restore target module gets and gives back: one file per
 * target behind {@link CrossRestoreTarget}, named in registry.ts.
 *
 * @module
 */
import type { Destination } from "./destination.ts";
import type { OpenedChains } from "./chains.ts";
import type { VmDefinition } from "../model/vm_definition.ts";

/** A target hypervisor of a cross-restore, with its own options `O`. */
export interface CrossRestoreTarget<O> {
  readonly name: string;
  /** The options only this target takes (the others' are refused with it). */
  readonly options: readonly (keyof O & string)[];
  /** The shell of an ssh:// destination unless one is given. */
  readonly shell: "posix" | "powershell";
  /**
   * Settles the target's choices for `definition` (after the overrides):
   * the preflight warnings and the push, run once the destination is open.
   */
  prepare(definition: VmDefinition, options: O): PreparedTarget;
}

/** A target with its choices made. */
export interface PreparedTarget {
  /** What may keep the guest from booting there (one line each). */
  warnings: string[];
  restore(ctx: TargetContext): Promise<TargetResult>;
}

/** Inputs shared by all targets. */
export interface TargetContext {
  dest: Destination;
  /** The chains to push; `chains.definition` already has the command-line overrides. */
  chains: OpenedChains;
  /** Register (or create) the VM on the host after its files are in place. */
  register: boolean;
  /** One line of progress (stderr). */
  progress: (line: string) => void;
}

/** What a target did. */
export interface TargetResult {
  target: string;
  vmName: string;
  /** Files written, the VM configuration last. */
  files: string[];
  /** The configuration file (or OVA package) that defines the VM. */
  config: string;
  registered: boolean;
  /** Target-specific facts: Proxmox `vmid`, VMware `vmId` from vim-cmd, Hyper-V generation. */
  details: Record<string, string | number>;
}
