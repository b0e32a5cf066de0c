/**
 * What every cross-restore target module gets and gives back.
 *
 * @module
 */
import type { Destination } from "./destination.ts";
import type { OpenedChains } from "./chains.ts";

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
  target: "proxmox" | "hyperv" | "vmware";
  vmName: string;
  /** Files written, the VM configuration last. */
  files: string[];
  /** The configuration file (or OVA package) that defines the VM. */
  config: string;
  registered: boolean;
  /** Target-specific facts: Proxmox `vmid`, VMware `vmId` from vim-cmd, Hyper-V generation. */
  details: Record<string, string | number>;
}
