/**
 * Cross-restore to VMware, two ways:
 *  - datastore files: per disk a VMFS flat descriptor + `-flat.vmdk` extent
 *    streamed into `ROOT/NAME/`, then `NAME.vmx` last; `--register` runs
 *    `vim-cmd solo/registervm` on the ESXi host;
 *  - an OVA package (streamOptimized VMDKs) to a file, stdout or the host.
 *
 * @module
 */
import { TargetError } from "../core/errors.ts";
import { flatExtentName, vmdkFlatWriter } from "../formats/vmdk.ts";
import { writeOva } from "./ova.ts";
import { pushImages, refuseExisting } from "./push.ts";
import type { CrossRestoreTarget, TargetContext, TargetResult } from "./target.ts";
import { preflightWarnings } from "./preflight.ts";
import { safeVmName } from "../model/vm_definition.ts";
import { defaultVmwareHardware, type VmwareHardware, vmxConfig } from "./vmware_config.ts";

/** Descriptor name of disk `i`: `NAME.vmdk`, `NAME_1.vmdk`, ... (VMware's own naming). */
export function vmwareDiskName(name: string, i: number): string {
  return i === 0 ? `${name}.vmdk` : `${name}_${i}.vmdk`;
}

/** VMware-specific choices. */
export interface VmwareOptions {
  /** Port group every NIC joins (default `VM Network`). */
  network?: string;
  /** SCSI controller model (default lsilogic, Windows lsisas1068). */
  controller?: string;
  /** NIC model (default e1000, Windows e1000e). */
  nic?: string;
  /** Write an OVA package of this name under the destination (`-`: stdout) instead of datastore files. */
  ova?: string;
}

export const vmwareTarget: CrossRestoreTarget<VmwareOptions> = {
  name: "vmware",
  options: ["network", "controller", "nic", "ova"],
  shell: "posix",
  prepare(definition, options) {
    const hw = defaultVmwareHardware(definition, options);
    return {
      warnings: preflightWarnings(definition, "vmware", {
        controller: hw.controller,
        nicModel: hw.nic,
      }),
      restore: (ctx) => options.ova ? restoreToOva(ctx, hw, options.ova) : restoreToEsxi(ctx, hw),
    };
  },
};

/** Pushes datastore files (see the module doc). */
export async function restoreToEsxi(ctx: TargetContext, hw: VmwareHardware): Promise<TargetResult> {
  const { dest, chains } = ctx;
  const def = chains.definition;
  const name = safeVmName(def.name);
  const folder = dest.join(dest.root, name);
  const descriptors = def.disks.map((_, i) => vmwareDiskName(name, i));
  const vmxName = `${name}.vmx`;
  await refuseExisting(
    dest,
    folder,
    [...descriptors, ...descriptors.map(flatExtentName), vmxName],
    "name",
  );
  await dest.mkdirp(folder);
  const pushed = await pushImages(
    dest,
    chains.disks.map((d, i) => ({
      path: dest.join(folder, flatExtentName(descriptors[i])),
      writer: vmdkFlatWriter,
      options: { fileName: descriptors[i] },
      source: d.source,
    })),
    ctx.progress,
  );
  const vmxPath = dest.join(folder, vmxName);
  await dest.writeFile(vmxPath, new TextEncoder().encode(vmxConfig(def, hw, descriptors)));
  ctx.progress(`wrote ${vmxPath}`);
  const details: Record<string, string> = {};
  if (ctx.register) {
    const r = await dest.exec(["vim-cmd", "solo/registervm", vmxPath]);
    if (r.code !== 0) {
      throw new TargetError(
        `VM files were written but 'vim-cmd solo/registervm' on ${dest.label} failed ` +
          `(exit ${r.code}): ${r.stderr.trim().split("\n").at(-1) || "no error text"}`,
      );
    }
    details.vmId = r.stdout.trim();
  }
  return {
    target: "vmware",
    vmName: def.name,
    files: [...pushed.flatMap((p) => [...p.companions, p.path]), vmxPath],
    config: vmxPath,
    registered: ctx.register,
    details,
  };
}

/**
 * Streams an OVA: to `file` under the destination (written as `.partial`,
 * renamed on success), or to stdout when `file` is `-`.
 */
export async function restoreToOva(
  ctx: TargetContext,
  hw: VmwareHardware,
  file: string,
): Promise<TargetResult> {
  const { dest, chains } = ctx;
  const def = chains.definition;
  const name = safeVmName(def.name);
  const disks = chains.disks.map((d, i) => ({
    source: d.source,
    href: `${name}-disk${i + 1}.vmdk`,
  }));
  if (file === "-") {
    const report = await writeOva(Deno.stdout.writable, name, def, hw, disks, {
      progress: ctx.progress,
    });
    return {
      target: "vmware",
      vmName: def.name,
      files: ["-"],
      config: "-",
      registered: false,
      details: { entries: report.entries.join(",") },
    };
  }
  const path = dest.join(dest.root, file);
  await refuseExisting(dest, dest.root, [file], "ova");
  const pending = await dest.create(path);
  try {
    const report = await writeOva(pending.writable, name, def, hw, disks, {
      progress: ctx.progress,
    });
    await pending.commit();
    return {
      target: "vmware",
      vmName: def.name,
      files: [path],
      config: path,
      registered: false,
      details: { entries: report.entries.join(",") },
    };
  } catch (err) {
    await pending.discard();
    throw err;
  }
}
