/**
 * Cross-restore to Hyper-V: VHDX files streamed into `ROOT\NAME\` on the host,
 * then the `New-VM` script written beside them last; `--register` runs it.
 *
 * @module
 */
import { TargetError } from "../core/errors.ts";
import { vhdxDynamicWriter } from "../formats/vhdx.ts";
import { hypervGeneration, hypervScript } from "./hyperv_script.ts";
import { pushImages, refuseExisting } from "./push.ts";
import type { CrossRestoreTarget, TargetContext, TargetResult } from "./target.ts";
import { preflightWarnings } from "./preflight.ts";
import { safeVmName } from "../model/vm_definition.ts";

/** Hyper-V-specific choices. */
export interface HypervOptions {
  /** Virtual switch for the NICs (default `Default Switch`). */
  switchName?: string;
}

export const hypervTarget: CrossRestoreTarget<HypervOptions> = {
  name: "hyperv",
  options: ["switchName"],
  shell: "powershell",
  prepare: (definition, options) => ({
    warnings: preflightWarnings(definition, "hyperv"),
    restore: (ctx) => restoreToHyperv(ctx, options),
  }),
};

/** Runs the Hyper-V push (see the module doc). */
export async function restoreToHyperv(ctx: TargetContext, o: HypervOptions): Promise<TargetResult> {
  const { dest, chains } = ctx;
  const def = chains.definition;
  const name = safeVmName(def.name);
  const folder = dest.join(dest.root, name);
  const vhdxFiles = def.disks.map((_, i) => `${name}-disk${i}.vhdx`);
  const scriptName = `create-${name}.ps1`;
  await refuseExisting(dest, folder, [...vhdxFiles, scriptName], "name");
  await dest.mkdirp(folder);
  const pushed = await pushImages(
    dest,
    chains.disks.map((d, i) => ({
      path: dest.join(folder, vhdxFiles[i]),
      writer: vhdxDynamicWriter,
      source: d.source,
    })),
    ctx.progress,
  );
  const scriptPath = dest.join(folder, scriptName);
  const script = hypervScript(def, { vhdxFiles, switchName: o.switchName ?? "Default Switch" });
  await dest.writeFile(scriptPath, new TextEncoder().encode(script));
  ctx.progress(`wrote ${scriptPath}`);
  if (ctx.register) {
    // On Windows the dialect wraps the call in powershell; a Linux staging host needs pwsh.
    const argv = dest.shell === "powershell"
      ? [scriptPath]
      : ["pwsh", "-NoProfile", "-NonInteractive", "-File", scriptPath];
    const r = await dest.exec(argv);
    if (r.code !== 0) {
      throw new TargetError(
        `VM files were written but ${scriptName} failed on ${dest.label} (exit ${r.code}): ` +
          (r.stderr.trim().split("\n").at(-1) || "no error text"),
      );
    }
  }
  return {
    target: "hyperv",
    vmName: def.name,
    files: [...pushed.map((p) => p.path), scriptPath],
    config: scriptPath,
    registered: ctx.register,
    details: { generation: hypervGeneration(def) },
  };
}
