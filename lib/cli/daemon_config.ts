/**
 * The configuration file of `dirtybit replicate daemon` (JSON):
 *
 * ```json
 * {
 *   "defaults": { "dr_host": "dr.example.net", "psk_file": "/etc/dirtybit/psk",
 *                 "state_dir": "/var/lib/dirtybit/replication", "cycle_interval": 300 },
 *   "disks": [
 *     { "name": "vm1-vda", "qmp": "/run/vm1.qmp", "node": "libvirt-1-format" },
 *     { "name": "vm2-vda", "qmp": "/run/vm2.qmp", "node": "drive-virtio-disk0",
 *       "cycle_interval": 60, "bandwidth_limit": "50M" }
 *   ]
 * }
 * ```
 *
 * Keys are the plugin parameters (see {@link DISK_PARAMS}) plus `name`
 * and `work_dir`; a disk's keys override `defaults`. Every error names the
 * file and the key. The caller reads the file; paths come out absolute, a
 * relative one taken from the file's directory (as a unit file or a cron
 * job starts the daemon from anywhere).
 *
 * @module
 */
import { dirname, resolve } from "node:path";
import { UsageError } from "../core/errors.ts";
import { isReplicaName, REPLICA_NAME_RULE } from "../replication/messages.ts";
import { type ParamName, PARAMS, type Params, parseParams } from "../params/params.ts";

/** Where a sender keeps its state, and how it paces, throttles and retries its cycles. */
export const CYCLE_PARAMS: readonly ParamName[] = [
  "state_dir",
  "cycle_interval",
  "bandwidth_limit",
  "retry_count",
  "retry_delay_ms",
  "retry_jitter_ms",
];

/** Parameters a daemon disk (or `defaults`) may set. */
export const DISK_PARAMS: readonly ParamName[] = [
  "qmp",
  "node",
  "nbd_socket",
  "dr_host",
  "dr_port",
  "psk",
  "psk_file",
  ...CYCLE_PARAMS,
  "compress",
];

const OTHER_KEYS = ["name", "work_dir"];

/** One disk of the daemon, validated. */
export interface DaemonDiskConfig {
  /** Replica name at the receiver. */
  name: string;
  /** Directory for QEMU's temporary overlays (default: STATE_DIR/work). */
  workDir?: string;
  /** The disk's parameters, `defaults` merged in, parsed and defaulted. */
  params: Params & { qmp: string; node: string[]; dr_host: string };
}

/**
 * Parses and validates a daemon configuration; `source` is the file's path:
 * it names the file in errors, and relative paths in it are taken from its
 * directory.
 */
export function parseDaemonConfig(text: string, source: string): DaemonDiskConfig[] {
  const base = dirname(resolve(source));
  const fail = (where: string, why: string) =>
    new UsageError(`config ${source}: ${where}${where ? ": " : ""}${why}`);
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw fail("", `not valid JSON (${(err as Error).message.split("\n")[0]})`);
  }
  if (!isObject(doc)) throw fail("", "must be a JSON object with a 'disks' list");
  for (const key of Object.keys(doc)) {
    if (key !== "defaults" && key !== "disks") {
      throw fail(key, "unknown key: only 'defaults' and 'disks' are allowed at the top");
    }
  }
  const defaults = doc.defaults ?? {};
  if (!isObject(defaults)) throw fail("defaults", "must be an object");
  checkKeys(defaults, "defaults", fail, false);
  if (!Array.isArray(doc.disks) || doc.disks.length === 0) {
    throw fail("disks", "must be a non-empty list of disks");
  }
  const seen = new Set<string>();
  return doc.disks.map((disk: unknown, i: number) => {
    const at = `disks[${i}]`;
    if (!isObject(disk)) throw fail(at, "must be an object");
    checkKeys(disk, at, fail, true);
    const merged: Record<string, unknown> = { ...defaults, ...disk };
    const name = merged.name;
    if (typeof name !== "string") throw fail(`${at}.name`, "is required (the replica name)");
    if (!isReplicaName(name)) throw fail(`${at}.name`, `'${name}' must be ${REPLICA_NAME_RULE}`);
    if (seen.has(name)) throw fail(`${at}.name`, `'${name}' appears twice: one entry per disk`);
    seen.add(name);
    const where = `${at} (${name})`;
    const kv: Record<string, string> = {};
    for (const [key, value] of Object.entries(merged)) {
      if (OTHER_KEYS.includes(key)) continue;
      if (typeof value === "object" || value === undefined) {
        throw fail(`${where}.${key}`, "must be a string, number or boolean");
      }
      kv[key] = isPath(key) ? resolve(base, String(value)) : String(value);
    }
    let params: Params;
    try {
      params = parseParams(kv);
    } catch (err) {
      throw fail(where, (err as Error).message);
    }
    for (const key of ["qmp", "node", "dr_host"] as const) {
      if (params[key] === undefined) throw fail(`${where}.${key}`, "is required");
    }
    if (params.node!.length !== 1) throw fail(`${where}.node`, "must name exactly one node");
    if (params.psk === undefined && params.psk_file === undefined) {
      throw fail(`${where}.psk_file`, "is required (or psk)");
    }
    const workDir = merged.work_dir;
    if (workDir !== undefined && typeof workDir !== "string") {
      throw fail(`${where}.work_dir`, "must be a path");
    }
    return {
      name,
      ...(workDir === undefined ? {} : { workDir: resolve(base, workDir) }),
      params: params as DaemonDiskConfig["params"],
    };
  });
}

function checkKeys(
  obj: Record<string, unknown>,
  where: string,
  fail: (where: string, why: string) => UsageError,
  allowName: boolean,
): void {
  for (const key of Object.keys(obj)) {
    const known = (DISK_PARAMS as readonly string[]).includes(key) ||
      key === "work_dir" || (allowName && key === "name");
    if (!known) {
      throw fail(
        `${where}.${key}`,
        `unknown key: use ${
          [...(allowName ? ["name"] : []), "work_dir", ...DISK_PARAMS].join(", ")
        }`,
      );
    }
  }
}

function isPath(key: string): boolean {
  return (PARAMS as Record<string, { kind: string }>)[key]?.kind === "path";
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
