/**
 * The one parameter table, its parsers and its help text, shared by both
 * front ends: Bacula plugin `key=value` lists (lib/bacula) and command-line
 * `--key value` flags (lib/cli) alike (`--secretkey-file` is `secretkey_file`).
 * It lives outside both so that neither front end imports the other.
 * Unknown, invalid and conflicting parameters are a UsageError naming the
 * parameter; secret values never appear in any message. Paths come out
 * absolute (resolved against the working directory), as QEMU and helper
 * processes with another working directory need them.
 *
 * @module
 */
import { resolve } from "node:path";
import { UsageError } from "../core/errors.ts";
import { REQUESTED_LEVELS } from "../core/level.ts";
import {
  type Compression,
  COMPRESSION_RULE,
  DEFAULT_COMPRESSION,
  parseCompression,
} from "../stream/compression.ts";
import { ACCESS_MODE_NAMES } from "../core/access_mode_names.ts";
import { CROSS_RESTORE_TARGETS } from "../crossrestore/registry.ts";

/** How a parameter's text is checked and converted. */
export type ParamKind =
  | "string"
  | "secret"
  | "path"
  | "int"
  | "bool"
  | "enum"
  | "list"
  | "rate"
  | "compression";

/** One row of the table. */
export interface ParamSpec {
  readonly kind: ParamKind;
  readonly help: string;
  /** Default as text, parsed like a given value. */
  readonly default?: string;
  readonly min?: number;
  readonly max?: number;
  readonly values?: readonly string[];
  /** Extra check on the text; returns the problem or null. */
  readonly check?: (text: string) => string | null;
  /** Why the parameter is refused as a command-line flag (plugin and config files only). */
  readonly notAFlag?: string;
  /** Used at restore time: the Bacula plugin offers it in bconsole's Plugin Options. */
  readonly restore?: true;
  /** Set by Bacula itself for the backend, never in a FileSet. */
  readonly setByBacula?: true;
}

/** Operating modes; unset (or `backup`) means a normal backup or restore. */
export const MODES = [
  "backup",
  "seed",
  "bitmap_push",
  "daemon",
  "receiver",
  "replication_status",
  "failover_pre",
  "failover_exec",
  "failback_pre",
  "failback_exec",
  "reprotect",
] as const;

function checkUrl(text: string): string | null {
  return /^https?:\/\/[^\s/]+/.test(text) ? null : "must be an http:// or https:// URL";
}

function checkPsk(text: string): string | null {
  return text.length >= 32 ? null : "must be at least 32 characters";
}

/** The parameter table. Keys are the plugin spelling (`snake_case`). */
export const PARAMS = {
  url: { kind: "string", help: "CloudStack API endpoint", check: checkUrl },
  apikey: { kind: "string", help: "CloudStack API key" },
  secretkey: { kind: "secret", help: "CloudStack secret key (prefer secretkey_file)" },
  secretkey_file: { kind: "path", help: "file holding the CloudStack secret key" },
  vm: { kind: "string", help: "VM to protect: UUID, name or instance name" },
  disks: { kind: "list", help: "subset of the VM's volumes (comma separated)" },
  nbd_access_mode: {
    kind: "enum",
    help: "how disks are read",
    default: "ssh_tunnel",
    values: ACCESS_MODE_NAMES,
  },
  nbd_port: {
    kind: "int",
    help: "TCP port of QEMU's NBD server on the KVM host (nbd_access_mode=direct)",
    default: "10809",
    min: 1,
    max: 65535,
  },
  ssh_user: { kind: "string", help: "user on the KVM host", default: "root" },
  ssh_key: { kind: "path", help: "private key for the KVM host" },
  ssh_port: { kind: "int", help: "SSH port of the KVM host", default: "22", min: 1, max: 65535 },
  known_hosts: { kind: "path", help: "known_hosts file (default: the system's)" },
  quiesce: {
    kind: "bool",
    help: "freeze guest file systems around the point in time",
    default: "true",
  },
  verify_ssl: { kind: "bool", help: "verify the CloudStack API certificate", default: "true" },
  ca_file: { kind: "path", help: "CA certificate for the CloudStack API" },
  compress: {
    kind: "compression",
    help: "stream compression: none, zstd or zstd:LEVEL",
    default: DEFAULT_COMPRESSION,
  },
  mode: {
    kind: "enum",
    help: `backup (default: backup or restore) or a replication job: ${MODES.slice(1).join(", ")}`,
    values: MODES,
  },
  dr_host: { kind: "string", help: "replication receiver host" },
  dr_port: { kind: "int", help: "replication receiver port", default: "10900", min: 1, max: 65535 },
  psk: {
    kind: "secret",
    help: "replication pre-shared key (prefer psk_file)",
    check: checkPsk,
    notAFlag: "a key on the command line is visible to every user in ps: " +
      "put it in a file only its owner can read (chmod 600) and give --psk-file",
  },
  psk_file: { kind: "path", help: "file holding the replication pre-shared key" },
  name: { kind: "string", help: "replication: replica name (default: the node name)" },
  work_dir: {
    kind: "path",
    help: "replication: temporary overlays, writable by QEMU (default: STATE_DIR/work/NAME)",
  },
  replica_dir: {
    kind: "path",
    help: "replication at the DR site: replicas (NAME.qcow2|raw), journals and roles",
  },
  replica_format: {
    kind: "enum",
    help: "replication receiver: format of new replicas",
    default: "qcow2",
    values: ["qcow2", "raw"],
  },
  listen: {
    kind: "string",
    help: "replication receiver: HOST:PORT to listen on",
    default: "0.0.0.0:10900",
  },
  force: {
    kind: "bool",
    help: "failover exec: promote although the source is not fenced (source site lost)",
  },
  memory: {
    kind: "int",
    help: "failover exec: MiB of the VM's start files",
    default: "1024",
    min: 64,
  },
  cpus: { kind: "int", help: "failover exec: CPUs of the VM's start files", default: "2", min: 1 },
  cycle_interval: {
    kind: "int",
    help: "seconds between replication cycles",
    default: "300",
    min: 1,
    max: 86400,
  },
  retry_count: {
    kind: "int",
    help: "retries on transport failures",
    default: "3",
    min: 0,
    max: 100,
  },
  retry_delay_ms: {
    kind: "int",
    help: "first retry delay (doubles each time)",
    default: "5000",
    min: 0,
    max: 3600000,
  },
  retry_jitter_ms: {
    kind: "int",
    help: "random extra delay per retry",
    default: "1000",
    min: 0,
    max: 3600000,
  },
  bandwidth_limit: {
    kind: "rate",
    help: "replication cap: N[K|M|G] or N[K|M|G]bit = bits/s, N[K|M|G]B = bytes/s",
  },
  cross_restore: {
    restore: true,
    kind: "enum",
    help: "restore into another hypervisor",
    values: CROSS_RESTORE_TARGETS,
  },
  dest: {
    restore: true,
    kind: "string",
    help: "cross-restore: ssh://user@host[:port]/path of the target host, or a local directory",
  },
  dest_ssh_key: {
    restore: true,
    kind: "path",
    help: "cross-restore: private key for an ssh:// dest",
  },
  dest_known_hosts: {
    restore: true,
    kind: "path",
    help: "cross-restore: known_hosts with the dest host's key (default: the system's)",
  },
  remote_shell: {
    restore: true,
    kind: "enum",
    help: "cross-restore: shell of the dest host (default powershell for hyperv, else posix)",
    values: ["posix", "powershell"],
  },
  register: {
    restore: true,
    kind: "bool",
    help: "cross-restore: register the VM on the target (qm rescan, New-VM, vim-cmd)",
  },
  vmid: {
    restore: true,
    kind: "int",
    help: "cross-restore proxmox: VMID (default: lowest free)",
    min: 1,
  },
  storage: {
    restore: true,
    kind: "string",
    help: "cross-restore proxmox: storage id (default local; local-lvm, local-zfs for volumes)",
  },
  storage_type: {
    restore: true,
    kind: "enum",
    help:
      "cross-restore proxmox: dir (default), lvmthin or zfspool (raw volumes created with pvesm alloc)",
    values: ["dir", "lvmthin", "zfspool"],
  },
  storage_dir: {
    restore: true,
    kind: "path",
    help: "cross-restore proxmox: that storage's path on the node (default /var/lib/vz)",
  },
  disk_format: {
    restore: true,
    kind: "enum",
    help: "cross-restore proxmox: disk format (default qcow2)",
    values: ["qcow2", "raw"],
  },
  bridge: {
    restore: true,
    kind: "string",
    help: "cross-restore proxmox: bridge of the NICs (default vmbr0)",
  },
  switch: {
    restore: true,
    kind: "string",
    help: "cross-restore hyperv: virtual switch (default Default Switch)",
  },
  network: {
    restore: true,
    kind: "string",
    help: "cross-restore vmware: port group (default VM Network)",
  },
  staging_dir: {
    restore: true,
    kind: "path",
    help:
      "cross-restore: where a restore job's streams wait for the end of the job (default: dirtybit-staging in the FD's WorkingDir)",
  },
  restore_as: {
    restore: true,
    kind: "enum",
    help:
      "restore with where=DIR: image (default: the disk, applied) or streams (the jobs' stream files as they are, for dirtybit serve and mount)",
    values: ["image", "streams"],
  },
  guest_stopped: {
    restore: true,
    kind: "bool",
    help:
      "in-place restore (where=/): confirms that no guest writes the disk (VM stopped or disk detached)",
  },
  domain: {
    kind: "string",
    help: "libvirt domain to back up, by name or UUID (instead of vm or qmp)",
  },
  connect: {
    kind: "string",
    help:
      "libvirt URI of domain: qemu:///system, qemu:///session or qemu+ssh://[user@]host[:port]/system",
    default: "qemu:///system",
    check: (t) => /^qemu(\+[a-z]+)?:\/\//.test(t) ? null : "must be a qemu:// libvirt URI",
  },
  disk: {
    kind: "list",
    help: "disks of domain to back up: targets (vda) or image paths (default all)",
  },
  exclude_disk: { kind: "list", help: "disks of domain to leave out: targets or image paths" },
  scratch_dir: {
    kind: "path",
    help:
      "domain: where libvirt keeps a running domain's fleecing files and NBD socket (default /var/lib/libvirt/qemu/dirtybit)",
  },
  qmp: { kind: "path", help: "QMP socket of a local QEMU (instead of vm)" },
  nbd_socket: {
    kind: "path",
    help:
      "unix socket of the NBD server the QEMU of qmp already runs (else one is started per job)",
  },
  node: { kind: "list", help: "block node(s) to back up with qmp (repeatable or comma separated)" },
  level: {
    kind: "enum",
    help: "backup level",
    default: "auto",
    values: REQUESTED_LEVELS,
  },
  take_over: {
    kind: "bool",
    help:
      "back up disks whose checkpoint bitmaps belong to another state directory's chain: remove them and take a full",
  },
  state_dir: {
    kind: "path",
    help:
      "where hash databases and chain state are kept (backend default: dirtybit/VM in the FD's WorkingDir)",
  },
  log_file: {
    kind: "path",
    help: "backend log file (default: dirtybit-backend.log in the FD's WorkingDir)",
  },
  format: {
    restore: true,
    kind: "enum",
    help: "restore target format",
    default: "raw",
    values: ["raw", "qcow2"],
  },
  abort_on_error: {
    kind: "bool",
    help: "Bacula: make every backend error fatal",
    setByBacula: true,
  },
  listing: { kind: "string", help: "Bacula: path of a listing session", setByBacula: true },
  query: { kind: "string", help: "Bacula: name of a query session", setByBacula: true },
  accurate: { kind: "bool", help: "Bacula: the job runs in accurate mode", setByBacula: true },
} as const satisfies Record<string, ParamSpec>;

/** A parameter name. */
export type ParamName = keyof typeof PARAMS;

type ValueOf<K extends ParamKind> = K extends "int" | "rate" ? number
  : K extends "bool" ? boolean
  : K extends "list" ? string[]
  : K extends "compression" ? Compression
  : string;

type ValueOfSpec<S> = S extends { kind: "enum"; values: readonly (infer V)[] } ? V
  : S extends { kind: infer K extends ParamKind } ? ValueOf<K>
  : never;

/** Parsed parameters: present when given or defaulted. Rates are bytes per second. */
export type Params = { -readonly [N in ParamName]?: ValueOfSpec<(typeof PARAMS)[N]> };

const SECRET_NOTE = "(value not shown)";

function isParamName(name: string): name is ParamName {
  return Object.hasOwn(PARAMS, name);
}

/** `true`/`false` and their usual spellings (`1`, `yes`, `on`...); null for any other text. */
export function parseBool(text: string): boolean | null {
  const t = text.toLowerCase();
  if (["1", "true", "yes", "on"].includes(t)) return true;
  if (["0", "false", "no", "off"].includes(t)) return false;
  return null;
}

const RATE_UNITS: Record<string, number> = { "": 1, K: 1e3, M: 1e6, G: 1e9 };

function parseRate(text: string): number | null {
  const m = /^(\d+(?:\.\d+)?)([KMG]?)(B|bit|b)?$/.exec(text);
  if (!m) return null;
  const n = Number(m[1]) * RATE_UNITS[m[2]];
  // A bare number is bytes; a bare multiplier (100M) means bits, as network caps usually are.
  const bits = m[3] === "bit" || m[3] === "b" || (m[3] === undefined && m[2] !== "");
  const bytesPerSecond = bits ? n / 8 : n;
  return bytesPerSecond >= 1 ? Math.floor(bytesPerSecond) : null;
}

function invalid(name: string, spec: ParamSpec, text: string, why: string): UsageError {
  const shown = spec.kind === "secret" ? SECRET_NOTE : `'${text}'`;
  return new UsageError(`parameter ${name}=${shown}: ${why}`);
}

/** Converts one value by its table row; throws UsageError naming the parameter. */
function convert(name: ParamName, text: string): string | number | boolean | string[] {
  const spec: ParamSpec = PARAMS[name];
  if (text === "" && spec.kind !== "bool") throw invalid(name, spec, text, "empty value");
  const problem = spec.check?.(text);
  if (problem) throw invalid(name, spec, text, problem);
  switch (spec.kind) {
    case "int": {
      if (!/^-?\d+$/.test(text)) throw invalid(name, spec, text, "must be a whole number");
      const n = Number(text);
      if ((spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max)) {
        throw invalid(name, spec, text, `must be ${spec.min ?? "-∞"}..${spec.max ?? "∞"}`);
      }
      return n;
    }
    case "bool": {
      const b = text === "" ? true : parseBool(text);
      if (b === null) throw invalid(name, spec, text, "must be true or false");
      return b;
    }
    case "enum":
      if (!spec.values?.includes(text)) {
        throw invalid(name, spec, text, `must be one of ${spec.values?.join(", ")}`);
      }
      return text;
    case "list": {
      const items = text.split(",").map((s) => s.trim());
      if (items.some((s) => s === "")) throw invalid(name, spec, text, "empty list item");
      return items;
    }
    case "rate": {
      const r = parseRate(text.replace(/^-/, ""));
      if (r === null) {
        throw invalid(name, spec, text, "must look like 100M (bits/s) or 12MB (bytes/s)");
      }
      if (text.startsWith("-")) throw invalid(name, spec, text, "must be at least 1 byte/s");
      return r;
    }
    case "compression": {
      const c = parseCompression(text);
      if (c === null) throw invalid(name, spec, text, COMPRESSION_RULE);
      return c;
    }
    case "path":
      return resolve(text);
    default:
      return text;
  }
}

/** Parameters that only mean something with cross_restore. */
const CROSS_RESTORE_ONLY: readonly ParamName[] = [
  "dest",
  "dest_ssh_key",
  "dest_known_hosts",
  "remote_shell",
  "register",
  "vmid",
  "storage",
  "storage_type",
  "storage_dir",
  "disk_format",
  "bridge",
  "switch",
  "network",
  "staging_dir",
];

/** Cross-parameter rules. */
function checkConflicts(p: Params): void {
  const both = (a: ParamName, b: ParamName) => {
    if (p[a] !== undefined && p[b] !== undefined) {
      throw new UsageError(`parameters ${a} and ${b} conflict: give only one of them`);
    }
  };
  both("secretkey", "secretkey_file");
  both("psk", "psk_file");
  if (p.restore_as === "streams" && p.cross_restore !== undefined) {
    throw new UsageError("parameters restore_as=streams and cross_restore conflict: give only one");
  }
  both("listing", "query");
  if (p.node && !p.qmp) throw new UsageError("parameter node needs qmp (the QMP socket path)");
  both("domain", "qmp");
  both("domain", "vm");
  for (const name of ["disk", "exclude_disk", "scratch_dir"] as const) {
    if (p[name] !== undefined && p.domain === undefined) {
      throw new UsageError(`parameter ${name} applies to domain=... only`);
    }
  }
  for (const name of CROSS_RESTORE_ONLY) {
    if (p[name] !== undefined && p.cross_restore === undefined) {
      throw new UsageError(`parameter ${name} applies to cross_restore=... only`);
    }
  }
  if (p.verify_ssl === false && p.ca_file !== undefined) {
    throw new UsageError("parameters verify_ssl=false and ca_file conflict: give only one of them");
  }
}

/**
 * Parses `key=value` entries in order. Repeated list parameters accumulate;
 * any other repeat is an error. Keys match case-insensitively (Bacula keeps
 * the case the user typed). Defaults fill what is not given.
 */
export function parseParamEntries(entries: Iterable<readonly [string, string]>): Params {
  const out: Record<string, unknown> = {};
  for (const [rawKey, text] of entries) {
    const key = rawKey.toLowerCase();
    if (!isParamName(key)) {
      throw new UsageError(
        `unknown parameter '${rawKey}': see 'dirtybit backend --help' for the list`,
      );
    }
    const value = convert(key, text);
    if (out[key] !== undefined) {
      if (PARAMS[key].kind !== "list") throw new UsageError(`parameter ${key} given twice`);
      out[key] = [...(out[key] as string[]), ...(value as string[])];
    } else {
      out[key] = value;
    }
  }
  for (const [name, spec] of Object.entries(PARAMS) as [ParamName, ParamSpec][]) {
    if (out[name] === undefined && spec.default !== undefined) {
      out[name] = convert(name, spec.default);
    }
  }
  const params = out as Params;
  checkConflicts(params);
  return params;
}

/** Parses a `key=value` record (see parseParamEntries). */
export function parseParams(kv: Record<string, string>): Params {
  return parseParamEntries(Object.entries(kv));
}

/** `key=value` text of parsed parameters for logs, with secrets masked. */
export function describeParams(p: Params): string {
  return (Object.entries(p) as [ParamName, unknown][])
    .map(([k, v]) => {
      const shown = PARAMS[k].kind === "secret"
        ? "***"
        : Array.isArray(v)
        ? v.join(",")
        : String(v);
      return `${k}=${shown}`;
    })
    .join(" ");
}

/** `--secretkey-file` -> `secretkey_file`. */
export function flagToParam(flag: string): string {
  return flag.replace(/^--/, "").replaceAll("-", "_");
}

/** `secretkey_file` -> `--secretkey-file`. */
export function paramToFlag(name: string): string {
  return `--${name.replaceAll("_", "-")}`;
}

/** How {@link flagHelp} words and lays out its lines. */
export interface HelpStyle {
  /** Width of the flag or key column (default 20). */
  readonly width?: number;
  /** A command's own words for some parameters (e.g. replication's for --node). */
  readonly help?: Partial<Record<ParamName, string>>;
}

/** Help lines for the given parameters, as `--flags` or as plugin `keys`. */
export function flagHelp(
  names: readonly ParamName[],
  style: "flag" | "plugin" = "flag",
  opts: HelpStyle = {},
): string {
  const shown = style === "flag" ? names.filter((n) => !(PARAMS[n] as ParamSpec).notAFlag) : names;
  return shown.map((n) => {
    const spec: ParamSpec = PARAMS[n];
    const def = spec.default !== undefined ? ` (default ${spec.default})` : "";
    const label = style === "flag" ? paramToFlag(n) : n;
    return `  ${label.padEnd(opts.width ?? 20)} ${opts.help?.[n] ?? spec.help}${def}`;
  }).join("\n");
}
