/**
 * Cross-restore to a Proxmox VE node: disks streamed as qcow2 (or raw) into
 * a directory storage's `images/<VMID>/`, then `/etc/pve/qemu-server/<VMID>.conf`
 * written last, which is what makes the VM exist on the node. Paths are taken
 * under the destination root (`/` on a node, a staging directory otherwise).
 *
 * @module
 */
import { TargetError, UsageError } from "../core/errors.ts";
import { qcow2Writer } from "../formats/qcow2.ts";
import { rawWriter } from "../formats/raw.ts";
import { pushImages } from "./push.ts";
import { firstFreeVmid, MIN_VMID, proxmoxConfig } from "./proxmox_config.ts";
import type { TargetContext, TargetResult } from "./target.ts";

/** Proxmox-specific choices. */
export interface ProxmoxOptions {
  /** Given VMID; default: the lowest free one. */
  vmid?: number;
  /** Directory storage id (default `local`). */
  storage?: string;
  /** That storage's path on the node (default `/var/lib/vz`). */
  storageDir?: string;
  /** Disk format on the storage (default qcow2). */
  diskFormat?: "qcow2" | "raw";
  /** Bridge for the NICs (default `vmbr0`). */
  bridge?: string;
}

/** Where Proxmox's OVMF package keeps the 4 MiB vars template copied into efidisk0. */
export const OVMF_VARS_TEMPLATE = "usr/share/pve-edk2-firmware/OVMF_VARS_4M.fd";

const CONF = /^(\d+)\.conf$/;

async function usedVmids(ctx: TargetContext): Promise<number[]> {
  const { dest } = ctx;
  const dirs = [dest.join(dest.root, "etc/pve/qemu-server")];
  const nodes = dest.join(dest.root, "etc/pve/nodes");
  for (const node of await dest.list(nodes)) {
    dirs.push(dest.join(nodes, node, "qemu-server"), dest.join(nodes, node, "lxc"));
  }
  const ids: number[] = [];
  for (const dir of dirs) {
    for (const name of await dest.list(dir)) {
      const m = CONF.exec(name);
      if (m) ids.push(Number(m[1]));
    }
  }
  return ids;
}

/** Runs the Proxmox push (see the module doc). */
export async function restoreToProxmox(
  ctx: TargetContext,
  o: ProxmoxOptions,
): Promise<TargetResult> {
  const { dest, chains } = ctx;
  const def = chains.definition;
  const storage = o.storage ?? "local";
  const storageDir = (o.storageDir ?? "/var/lib/vz").replace(/^\/+/, "");
  const format = o.diskFormat ?? "qcow2";
  const used = await usedVmids(ctx);
  if (o.vmid !== undefined && (o.vmid < MIN_VMID || !Number.isInteger(o.vmid))) {
    throw new UsageError(`restore: --vmid must be an integer of at least ${MIN_VMID}`);
  }
  if (o.vmid !== undefined && used.includes(o.vmid)) {
    throw new TargetError(
      `VMID ${o.vmid} is already used on ${dest.label}: give another --vmid or omit it`,
    );
  }
  const vmid = o.vmid ?? firstFreeVmid(used);
  const confDir = dest.join(dest.root, "etc/pve/qemu-server");
  const imagesDir = dest.join(dest.root, storageDir, "images", String(vmid));
  const fileNames = def.disks.map((_, i) => `vm-${vmid}-disk-${i}.${format}`);
  const efiName = `vm-${vmid}-disk-${def.disks.length}.raw`;
  const existing = new Set(await dest.list(imagesDir));
  const clash = [...fileNames, efiName].find((n) =>
    existing.has(n) || existing.has(`${n}.partial`)
  );
  if (clash) {
    throw new TargetError(
      `${dest.join(imagesDir, clash)} already exists: remove it or give another --vmid`,
    );
  }
  await dest.mkdirp(imagesDir);
  await dest.mkdirp(confDir);
  const writer = format === "qcow2" ? qcow2Writer : rawWriter;
  const pushed = await pushImages(
    dest,
    chains.disks.map((d, i) => ({
      path: dest.join(imagesDir, fileNames[i]),
      writer,
      source: d.source,
    })),
    ctx.progress,
  );
  const files = pushed.map((p) => p.path);
  let efiVolume: string | undefined;
  if (def.firmware === "uefi") {
    const efiPath = dest.join(imagesDir, efiName);
    if (await dest.copy(dest.join(dest.root, OVMF_VARS_TEMPLATE), efiPath)) {
      efiVolume = `${vmid}/${efiName}`;
      files.push(efiPath);
    } else {
      ctx.progress(
        `warning: ${OVMF_VARS_TEMPLATE} not found on ${dest.label}: no efidisk0, OVMF keeps ` +
          `its variables only until power-off; add one with 'qm set ${vmid} --efidisk0 ${storage}:1,efitype=4m'`,
      );
    }
  }
  const confPath = dest.join(confDir, `${vmid}.conf`);
  const text = proxmoxConfig(def, {
    vmid,
    storage,
    bridge: o.bridge ?? "vmbr0",
    volumes: fileNames.map((n) => `${vmid}/${n}`),
    efiVolume,
  });
  await dest.writeFile(confPath, new TextEncoder().encode(text));
  files.push(confPath);
  ctx.progress(`wrote ${confPath}`);
  if (ctx.register) {
    const rescan = await dest.exec(["qm", "rescan", "--vmid", String(vmid)]);
    const config = await dest.exec(["qm", "config", String(vmid)]);
    if (rescan.code !== 0 || config.code !== 0) {
      const r = rescan.code !== 0 ? rescan : config;
      throw new TargetError(
        `VM ${vmid} was written but 'qm ${
          rescan.code !== 0 ? "rescan" : "config"
        }' on ${dest.label} ` +
          `failed (exit ${r.code}): ${r.stderr.trim().split("\n").at(-1) || "no error text"}`,
      );
    }
  }
  return {
    target: "proxmox",
    vmName: def.name,
    files,
    config: confPath,
    registered: ctx.register,
    details: { vmid },
  };
}
