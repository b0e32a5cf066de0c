/**
 * The cross-restore targets by name. Adding one is adding its file and one
 * line here.
 *
 * @module
 */
import { hypervTarget } from "./hyperv.ts";
import { proxmoxTarget } from "./proxmox.ts";
import type { CrossRestoreTarget } from "./target.ts";
import { vmwareTarget } from "./vmware.ts";

/** Every target; the first is the default. */
const targets = [
  proxmoxTarget,
  hypervTarget,
  vmwareTarget,
] as const;

type OptionsOf<T> = T extends CrossRestoreTarget<infer O> ? O : never;
type Intersection<U> = (U extends unknown ? (u: U) => void : never) extends (i: infer I) => void ? I
  : never;

/** The options of every target, in one request (each target takes its own). */
export type TargetOptions = Intersection<OptionsOf<typeof targets[number]>>;

/** An option of some target. */
export type TargetOption = keyof TargetOptions;

/** The names of the targets, the default first. */
export const CROSS_RESTORE_TARGETS: readonly string[] = targets.map((t) => t.name);

/** The target named `name`, or undefined. */
export function findTarget(name: string): CrossRestoreTarget<TargetOptions> | undefined {
  return targets.find((t) => t.name === name) as CrossRestoreTarget<TargetOptions> | undefined;
}

/** The target that takes `option`. */
export function ownerOf(option: TargetOption): string {
  return targets.find((t) => (t.options as readonly string[]).includes(option))!.name;
}
