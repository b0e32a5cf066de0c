/**
 * Names of the virtual files in the `@cloudstack` namespace and where a
 * restored file goes: `/@cloudstack/<vm>/<disk>/<level>-<jobid>.dbit`, so
 * every job's file is distinct and a restore tree reads as VM, disk, job;
 * a replication job's record is `/@cloudstack/replication/<name>/<mode>-<jobid>.json`.
 *
 * @module
 */

/** The plugin name in the handshake and FileSet prefix. */
export const PLUGIN_NAME = "cloudstack";
/** The file-name namespace. */
export const NAMESPACE = "@cloudstack";

/** A path component made safe: no `/`, no trailing spaces (PTCOMM strips them), never empty. */
function component(text: string): string {
  const safe = text.replaceAll("/", "_").replace(/\s+$/, "");
  return safe === "" || safe === "." || safe === ".." ? "_" : safe;
}

/** The virtual file of one disk in one job. */
export function backupFileName(vm: string, disk: string, level: string, jobId: number): string {
  return `/${NAMESPACE}/${component(vm)}/${component(disk)}/${component(level)}-${jobId}.dbit`;
}

/** The directory of replication job records (a VM of that name is no clash: records end in .json). */
const RECORDS = "replication";

/** The record file of a replication job (`mode=`) about replica `name`. */
export function recordFileName(name: string, mode: string, jobId: number): string {
  return `/${NAMESPACE}/${RECORDS}/${component(name)}/${component(mode)}-${jobId}.json`;
}

/** Where a restored record file's name has its `/@cloudstack/replication/` part; -1 if it is none. */
export function recordNameAt(fname: string): number {
  const at = fname.lastIndexOf(`/${NAMESPACE}/${RECORDS}/`);
  return at >= 0 && /\/[^/]+\/[a-z_]+-\d+\.json$/.test(fname.slice(at)) ? at : -1;
}

/** A VM's name as its directory name (of its state directory, see lib/params/state_dir.ts). */
export function vmDirName(vm: string): string {
  return component(vm);
}

/** Parts of a restored file name (after Bacula added the where prefix). */
export interface RestoreName {
  /** Everything before `/@cloudstack/`: the where prefix ("" in place). */
  prefix: string;
  vm: string;
  disk: string;
  level: string;
  jobId: number;
}

/** Parses `<prefix>/@cloudstack/<vm>/<disk>/<level>-<jobid>.dbit`; null if it is not one. */
export function parseRestoreName(fname: string): RestoreName | null {
  const at = fname.lastIndexOf(`/${NAMESPACE}/`);
  if (at < 0) return null;
  const parts = fname.slice(at + NAMESPACE.length + 2).split("/");
  if (parts.length !== 3) return null;
  const m = /^([a-z]+)-(\d+)\.dbit$/.exec(parts[2]);
  if (!m || !parts[0] || !parts[1]) return null;
  return {
    prefix: fname.slice(0, at),
    vm: parts[0],
    disk: parts[1],
    level: m[1],
    jobId: Number(m[2]),
  };
}

/** The local restore target of a disk: one file per disk under the where prefix. */
export function restoreTargetPath(name: RestoreName, format: "raw" | "qcow2"): string {
  return `${name.prefix}/${NAMESPACE}/${name.vm}/${name.disk}.${format}`;
}
