/**
 * Cross-restore to a Proxmox VE node: disks streamed as qcow2 (or raw) into
 * a directory storage's `images/<VMID>/`, or as raw onto LVM-thin / ZFS
 * volumes created first with `pvesm alloc` (written in place: a failure frees
 * them again), then `/etc/pve/qemu-server/<VMID>.conf` written last, which is
 * what makes the VM exist on the node. Paths are taken under the destination
 * root (`/` on a node, a staging directory otherwise).
 *
 * @module
 */
import { describeError, TargetError, UsageError, wrapError } from "../core/errors.ts";
import { qcow2Writer } from "../formats/qcow2.ts";
import { rawWriter } from "../formats/raw.ts";
import { pushImages, refuseExisting } from "./push.ts";
import { firstFreeVmid, MIN_VMID, proxmoxConfig } from "./proxmox_config.ts";
import type { Destination } from "./destination.ts";
import type { CrossRestoreTarget, TargetContext, TargetResult } from "./target.ts";
import { preflightWarnings } from "./preflight.ts";

/** The storage types a restore can write to. */
export const PROXMOX_STORAGE_TYPES = ["dir", "lvmthin", "zfspool"] as const;
/** One of {@link PROXMOX_STORAGE_TYPES}. */
export type ProxmoxStorageType = typeof PROXMOX_STORAGE_TYPES[number];

const DEFAULT_STORAGE: Record<ProxmoxStorageType, string> = {
  dir: "local",
  lvmthin: "local-lvm",
  zfspool: "local-zfs",
};

/** Proxmox-specific choices. */
export interface ProxmoxOptions {
  /** Given VMID; default: the lowest free one. */
  vmid?: number;
  /** Storage id (default `local`, `local-lvm` for lvmthin, `local-zfs` for zfspool). */
  storage?: string;
  /** `dir` (default): files under `storageDir`; `lvmthin`, `zfspool`: volumes made with pvesm. */
  storageType?: ProxmoxStorageType;
  /** A directory storage's path on the node (default `/var/lib/vz`). */
  storageDir?: string;
  /** Disk format on a directory storage (default qcow2; volumes are always raw). */
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

/** Where the disks went, and how to take them back if the VM cannot be defined. */
interface Placed {
  /** Volume names for the conf (same order as the disks), without the storage id. */
  volumes: string[];
  efiVolume?: string;
  files: string[];
  /** Removes what was placed; resolves with what could not be removed (empty: all gone). */
  undo(): Promise<string[]>;
}

function checkOptions(dest: Destination, o: ProxmoxOptions): ProxmoxStorageType {
  const type = o.storageType ?? "dir";
  if (type === "dir") return type;
  if (!dest.remote) {
    throw new UsageError(
      `restore: storage type ${type} needs an ssh:// destination: its volumes are created with pvesm on the node`,
    );
  }
  if (o.diskFormat === "qcow2") {
    throw new UsageError(`restore: ${type} volumes hold raw disks: drop disk format qcow2`);
  }
  if (o.storageDir !== undefined) {
    throw new UsageError(`restore: the storage dir applies to storage type dir only, not ${type}`);
  }
  return type;
}

/** Disks as files of a directory storage, the EFI vars copied beside them. */
async function placeInDirectory(
  ctx: TargetContext,
  o: ProxmoxOptions,
  vmid: number,
  storage: string,
): Promise<Placed> {
  const { dest, chains } = ctx;
  const def = chains.definition;
  const format = o.diskFormat ?? "qcow2";
  const storageDir = (o.storageDir ?? "/var/lib/vz").replace(/^\/+/, "");
  const imagesDir = dest.join(dest.root, storageDir, "images", String(vmid));
  const fileNames = def.disks.map((_, i) => `vm-${vmid}-disk-${i}.${format}`);
  const efiName = `vm-${vmid}-disk-${def.disks.length}.raw`;
  // A `.partial` is what a killed push of this restore left: create() replaces it.
  await refuseExisting(dest, imagesDir, [...fileNames, efiName], "vmid");
  await dest.mkdirp(imagesDir);
  const pushed = await pushImages(
    dest,
    chains.disks.map((d, i) => ({
      path: dest.join(imagesDir, fileNames[i]),
      writer: format === "qcow2" ? qcow2Writer : rawWriter,
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
      warnNoEfiDisk(ctx, vmid, storage);
    }
  }
  return {
    volumes: fileNames.map((n) => `${vmid}/${n}`),
    efiVolume,
    files,
    undo: async () => {
      await dest.remove(files);
      return [];
    },
  };
}

function warnNoEfiDisk(ctx: TargetContext, vmid: number, storage: string): void {
  ctx.progress(
    `warning: ${OVMF_VARS_TEMPLATE} not found on ${ctx.dest.label}: no efidisk0, OVMF keeps ` +
      `its variables only until power-off; add one with 'qm set ${vmid} --efidisk0 ${storage}:1,efitype=4m'`,
  );
}

/** Runs `pvesm ARGS` on the node; its stdout, or a TargetError quoting its stderr. */
async function pvesm(dest: Destination, args: string[]): Promise<string> {
  const r = await dest.exec(["pvesm", ...args]);
  if (r.code !== 0) {
    throw new TargetError(
      `'pvesm ${args.join(" ")}' on ${dest.label} failed (exit ${r.code}): ` +
        (r.stderr.trim().split("\n").at(-1) || "no error text"),
    );
  }
  return r.stdout;
}

/**
 * Disks as volumes created first (`pvesm alloc`, device from `pvesm path`),
 * raw written in place; the EFI vars copied onto a volume of their own. A
 * failure frees every volume created so far.
 */
async function placeInVolumes(
  ctx: TargetContext,
  vmid: number,
  storage: string,
): Promise<Placed> {
  const { dest, chains } = ctx;
  const def = chains.definition;
  const created: string[] = [];
  const undo = async () => {
    const left: string[] = [];
    for (const volid of created.toReversed()) {
      await pvesm(dest, ["free", volid]).catch(() => left.push(volid));
    }
    created.length = 0;
    return left;
  };
  const alloc = async (name: string, bytes: number) => {
    // pvesm sizes are in KiB; LVM and ZFS round the volume up, never down.
    await pvesm(dest, ["alloc", storage, String(vmid), name, String(Math.ceil(bytes / 1024))]);
    created.push(`${storage}:${name}`);
    const device = (await pvesm(dest, ["path", `${storage}:${name}`])).trim().split("\n").at(-1);
    if (!device?.startsWith("/")) {
      throw new TargetError(`'pvesm path ${storage}:${name}' on ${dest.label} named no device`);
    }
    return device;
  };
  try {
    const names = def.disks.map((_, i) => `vm-${vmid}-disk-${i}`);
    const devices: string[] = [];
    for (const [i, d] of def.disks.entries()) devices.push(await alloc(names[i], d.size));
    ctx.progress(`created ${names.map((n) => `${storage}:${n}`).join(", ")}`);
    await pushImages(
      dest,
      chains.disks.map((d, i) => ({
        path: devices[i],
        writer: rawWriter,
        source: d.source,
        inPlace: true,
      })),
      ctx.progress,
    );
    let efiVolume: string | undefined;
    if (def.firmware === "uefi") {
      const efiName = `vm-${vmid}-disk-${def.disks.length}`;
      const template = dest.join(dest.root, OVMF_VARS_TEMPLATE);
      if (await dest.copy(template, await alloc(efiName, EFI_VARS_BYTES))) {
        efiVolume = efiName;
      } else {
        await pvesm(dest, ["free", created.pop()!]);
        warnNoEfiDisk(ctx, vmid, storage);
      }
    }
    return {
      volumes: names,
      efiVolume,
      files: [...created],
      undo,
    };
  } catch (err) {
    throw withLeftovers(err, await undo());
  }
}

/** Size of OVMF_VARS_4M.fd, the efidisk Proxmox creates for `efitype=4m`. */
const EFI_VARS_BYTES = 540672;

/** `err`, naming the volumes that could not be freed after it (if any). */
function withLeftovers(err: unknown, left: string[]): unknown {
  if (left.length === 0) return err;
  return wrapError(
    err,
    TargetError,
    `${describeError(err)}; volumes left on the node: ${left.join(", ")} ` +
      `(remove them with 'pvesm free VOLUME')`,
  );
}

export const proxmoxTarget: CrossRestoreTarget<ProxmoxOptions> = {
  name: "proxmox",
  options: ["vmid", "storage", "storageType", "storageDir", "diskFormat", "bridge"],
  shell: "posix",
  prepare: (definition, options) => ({
    warnings: preflightWarnings(definition, "proxmox"),
    restore: (ctx) => restoreToProxmox(ctx, options),
  }),
};

/** Runs the Proxmox push (see the module doc). */
export async function restoreToProxmox(
  ctx: TargetContext,
  o: ProxmoxOptions,
): Promise<TargetResult> {
  const { dest, chains } = ctx;
  const def = chains.definition;
  const storageType = checkOptions(dest, o);
  const storage = o.storage ?? DEFAULT_STORAGE[storageType];
  const used = await usedVmids(ctx);
  if (o.vmid !== undefined && (o.vmid < MIN_VMID || !Number.isInteger(o.vmid))) {
    throw new UsageError((p) => `restore: ${p("vmid")} must be an integer of at least ${MIN_VMID}`);
  }
  if (o.vmid !== undefined && used.includes(o.vmid)) {
    throw new TargetError((p) =>
      `VMID ${o.vmid} is already used on ${dest.label}: give another ${p("vmid")} or omit it`
    );
  }
  const vmid = o.vmid ?? firstFreeVmid(used);
  const confDir = dest.join(dest.root, "etc/pve/qemu-server");
  await dest.mkdirp(confDir);
  const placed = storageType === "dir"
    ? await placeInDirectory(ctx, o, vmid, storage)
    : await placeInVolumes(ctx, vmid, storage);
  const confPath = dest.join(confDir, `${vmid}.conf`);
  const text = proxmoxConfig(def, {
    vmid,
    storage,
    bridge: o.bridge ?? "vmbr0",
    volumes: placed.volumes,
    efiVolume: placed.efiVolume,
  });
  try {
    await dest.writeFile(confPath, new TextEncoder().encode(text));
  } catch (err) {
    throw withLeftovers(err, await placed.undo());
  }
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
    files: [...placed.files, confPath],
    config: confPath,
    registered: ctx.register,
    details: { vmid, storage },
  };
}
