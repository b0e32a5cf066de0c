/**
 * `dirtybit restore --to proxmox|hyperv|vmware`: a backup chain restored as a
 * VM of another hypervisor, disks converted while they stream to the target
 * host (or a staging directory), the VM definition written last.
 *
 * @module
 */
import { basename, dirname, resolve } from "node:path";
import { choice, type FlagTable, integer, type Parsed, parseFlags } from "./args.ts";
import { refuseTerminalStdout } from "./output.ts";
import { Progress, PROGRESS_FLAGS, PROGRESS_HELP } from "./progress.ts";
import { timing } from "./progress_view.ts";
import { UsageError } from "../core/errors.ts";
import { PROXMOX_STORAGE_TYPES } from "../crossrestore/proxmox.ts";
import { CROSS_RESTORE_TARGETS, type TargetOption } from "../crossrestore/registry.ts";
import {
  planCrossRestore,
  planDestination,
  runCrossRestore as crossRestore,
} from "../crossrestore/run.ts";

const HELP = `
usage: dirtybit restore --to proxmox|hyperv|vmware --dest DEST [options] STREAM...
       dirtybit restore --to vmware --ova FILE|- [--dest DEST] [options] STREAM...

Restores a backup chain (per disk: the full, then its incrementals; all disks
of the VM may be given) as a VM of another hypervisor. Disks are converted
while they stream to DEST (qcow2/raw, VHDX, VMDK) as NAME.partial and renamed
when complete; the VM configuration is written last. The VM definition comes
from the backup (CPU, memory, firmware, disk bus, NICs/MACs, OS type); the
flags below override it.

  --to TARGET          proxmox, hyperv or vmware
  --dest DEST          ssh://user@host[:port]/path or a local directory (staging)
                         proxmox: path is the node's root (normally /): disks go to
                           STORAGE-DIR/images/VMID/ (or volumes), the config to
                           etc/pve/qemu-server/
                         hyperv: path is a folder (ssh://u@h/D:/VMs): files go to PATH\\NAME\\
                         vmware: path is a datastore dir (/vmfs/volumes/DS): files go to PATH/NAME/
  --ova FILE|-         vmware: write an OVA package instead (to FILE, under DEST if given, or stdout)
  --ssh-key FILE       private key for the target host (required for ssh://)
  --known-hosts FILE   known_hosts holding the host's key (default: the system's)
  --remote-shell SH    posix or powershell (default: powershell for hyperv, else posix)
  --register           proxmox: qm rescan + qm config; hyperv: run the New-VM script;
                       vmware: vim-cmd solo/registervm
  --name NAME          VM name            --cpus N        vCPUs
  --memory MIB         memory in MiB      --firmware F    bios or uefi
  --os FAMILY          linux or windows (guest adaptation warnings, OS type names)
  --vmid N             proxmox: VMID (default: lowest free, from 100)
  --storage ID         proxmox: storage id (default local; local-lvm, local-zfs)
  --storage-type T     proxmox: dir (default), lvmthin or zfspool: raw volumes created
                       with pvesm alloc on the node (ssh:// only), freed if the push fails
  --storage-dir PATH   proxmox: a dir storage's path on the node (default /var/lib/vz)
  --disk-format FMT    proxmox dir storage: qcow2 or raw (default qcow2)
  --bridge BR          proxmox: bridge of the NICs (default vmbr0)
  --switch NAME        hyperv: virtual switch (default "Default Switch")
  --network NAME       vmware: port group (default "VM Network")
  --controller C       vmware: lsilogic, lsisas1068 or pvscsi (default lsilogic, Windows lsisas1068)
  --nic-model M        vmware: e1000, e1000e or vmxnet3 (default e1000, Windows e1000e)
  --json               print a JSON summary on stdout${PROGRESS_HELP}
`;

// --ova is no path to make absolute: under --dest it is a file name there.
const FLAGS = {
  to: { type: "string" },
  dest: { type: "string" },
  ova: { type: "string" },
  "ssh-key": { type: "string", path: true },
  "known-hosts": { type: "string", path: true },
  "remote-shell": { type: "string" },
  register: { type: "boolean" },
  name: { type: "string" },
  cpus: { type: "string" },
  memory: { type: "string" },
  firmware: { type: "string" },
  os: { type: "string" },
  vmid: { type: "string" },
  storage: { type: "string" },
  "storage-type": { type: "string" },
  "storage-dir": { type: "string" },
  "disk-format": { type: "string" },
  bridge: { type: "string" },
  switch: { type: "string" },
  network: { type: "string" },
  controller: { type: "string" },
  "nic-model": { type: "string" },
  json: { type: "boolean" },
  ...PROGRESS_FLAGS,
} as const satisfies FlagTable;

type Flags = Parsed<typeof FLAGS>;

function positiveInt(flag: string, text: string | undefined, max: number): number | undefined {
  return integer("restore", flag, text, 1, max);
}

/** The flag of each target option. */
const OPTION_FLAGS: Record<TargetOption, keyof Flags> = {
  vmid: "vmid",
  storage: "storage",
  storageType: "storage-type",
  storageDir: "storage-dir",
  diskFormat: "disk-format",
  bridge: "bridge",
  switchName: "switch",
  network: "network",
  controller: "controller",
  nic: "nic-model",
  ova: "ova",
};

/** Runs `dirtybit restore --to ...` (`args` includes `--to`). */
export async function runCrossRestore(args: string[]): Promise<number> {
  const parsed = parseFlags("restore", args, FLAGS, HELP);
  if (!parsed) return 0;
  const f = parsed.values;
  const target = choice("restore", "to", f.to, CROSS_RESTORE_TARGETS, CROSS_RESTORE_TARGETS[0]);
  const given = (Object.keys(OPTION_FLAGS) as TargetOption[]).filter((o) =>
    f[OPTION_FLAGS[o]] !== undefined
  );
  const plan = planCrossRestore(target, given, {
    option: (o) => `restore: --${OPTION_FLAGS[o]}`,
    target: (t) => `--to ${t}`,
  });
  if (!f.dest && !f.ova) {
    throw new UsageError(
      "restore: --to needs --dest ssh://user@host/path or DIR (vmware: or --ova FILE|-)",
    );
  }
  if (f.ova && f.register) throw new UsageError("restore: --register does not apply to --ova");
  if (f.ova === "-") refuseTerminalStdout("restore", "--ova - writes the OVA package, which");
  if (f.ova === "-" && f.dest) {
    throw new UsageError("restore: --ova - writes to stdout: drop --dest");
  }
  if (f.ova === "-" && f.json) {
    throw new UsageError("restore: --ova - writes the package to stdout: drop --json");
  }
  if (f.ova && f.ova !== "-" && f.dest && /[\\/]/.test(f.ova)) {
    throw new UsageError("restore: with --dest, --ova takes a file name, not a path");
  }
  if (f.ova && f.ova !== "-" && !f.dest) f.ova = resolve(f.ova);
  const overrides = {
    name: f.name,
    cpus: positiveInt("cpus", f.cpus, 4096),
    memoryMiB: positiveInt("memory", f.memory, 64 * 1024 * 1024),
    firmware: f.firmware === undefined
      ? undefined
      : choice("restore", "firmware", f.firmware, ["bios", "uefi"], "bios"),
    osFamily: f.os === undefined
      ? undefined
      : choice("restore", "os", f.os, ["linux", "windows"], "linux"),
  };
  const vmid = positiveInt("vmid", f.vmid, 999_999_999);
  const diskFormat = f["disk-format"] === undefined
    ? undefined
    : choice("restore", "disk-format", f["disk-format"], ["qcow2", "raw"], "qcow2");
  const storageType = f["storage-type"] === undefined
    ? undefined
    : choice("restore", "storage-type", f["storage-type"], PROXMOX_STORAGE_TYPES, "dir");
  const spec = f.dest
    ? planDestination(f.dest, {
      sshKey: f["ssh-key"] !== undefined,
      remoteShell: f["remote-shell"] !== undefined,
    })
    : undefined;
  const remoteShell = spec?.kind === "ssh" && f["remote-shell"] !== undefined
    ? choice("restore", "remote-shell", f["remote-shell"], ["posix", "powershell"], "posix")
    : undefined;
  if (parsed.positionals.length === 0) throw new UsageError("restore: name at least one STREAM");

  let progress: Progress | undefined;
  const result = await crossRestore(plan, {
    streams: parsed.positionals,
    options: {
      vmid,
      storage: f.storage,
      storageType,
      storageDir: f["storage-dir"],
      diskFormat,
      bridge: f.bridge,
      switchName: f.switch,
      network: f.network,
      controller: f.controller,
      nic: f["nic-model"],
      ova: f.ova === undefined ? undefined : f.ova === "-" || f.dest ? f.ova : basename(f.ova),
    },
    dest: spec ?? { kind: "local", dir: f.ova === "-" ? "." : dirname(f.ova!) },
    ssh: f["ssh-key"] ? { keyPath: f["ssh-key"], knownHostsPath: f["known-hosts"] } : undefined,
    remoteShell,
    register: f.register ?? false,
    overrides,
    // Notes and warnings matter beyond a terminal (a job log), unlike progress.
    onMessage: (kind, text) =>
      console.error(`dirtybit: ${kind === "info" ? "note" : "warning"}: ${text}`),
    startProgress: async () => {
      const p = progress = await Progress.start("restore", f);
      return { line: (line) => p.info(line), read: p.update };
    },
  }).catch((err) => {
    progress?.fail(err);
    throw err;
  });
  progress!.info(`restored ${result.vmName} to ${target}: ${result.config}`);
  const read = progress!.totals().done;
  const when = timing(progress!.startedAt, Date.now(), read);
  progress!.finish({
    what: `restore of ${result.vmName} to ${target}`,
    read,
    seconds: when.seconds,
  });
  if (f.json) console.log(JSON.stringify({ ...result, ...when }, null, 2));
  return 0;
}
