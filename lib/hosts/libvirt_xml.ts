/**
 * The XML documents of libvirt's checkpoint and pull-mode backup API
 * (`<domaincheckpoint>`, `<domainbackup mode='pull'>`) as dirtybit writes and
 * reads them, and the domain XML of a restored VM. Pure: no I/O.
 *
 * libvirt names each disk's dirty bitmap after the checkpoint, keeps every
 * checkpoint's bitmap recording, and for `<disk backupmode='incremental'
 * incremental='CP'>` exports the changes since CP as the NBD meta context
 * `qemu:dirty-bitmap:EXPORTBITMAP` beside the disk's point-in-time export.
 *
 * @module
 */
import { attr, xmlText } from "./libvirt.ts";

/** Escapes text for an XML attribute value or element content. */
export function xmlEscape(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")
    .replaceAll("'", "&apos;").replaceAll('"', "&quot;");
}

/** How one disk takes part in a pull backup. */
export type BackupDiskMode =
  | { target: string; mode: "full"; scratch: string }
  | { target: string; mode: "incremental"; since: string; scratch: string }
  | { target: string; mode: "no" };

/** Where a pull backup serves its exports: a unix socket, or a TCP address and port. */
export type BackupServer = { socket: string } | { host: string; port: number };

/** `<domainbackup mode='pull'>` served on `server`, every disk listed. */
export function backupXml(server: BackupServer, disks: BackupDiskMode[]): string {
  const lines = disks.map((d) => {
    const name = `name='${xmlEscape(d.target)}'`;
    if (d.mode === "no") return `    <disk ${name} backup='no'/>`;
    // The export and its bitmap named here, so the job's XML need not be read back.
    const inc = d.mode === "incremental"
      ? ` backupmode='incremental' incremental='${xmlEscape(d.since)}'` +
        ` exportbitmap='${xmlEscape(exportBitmapName(d.target))}'`
      : " backupmode='full'";
    return `    <disk ${name} backup='yes' type='file' exportname='${xmlEscape(d.target)}'${inc}>` +
      `<scratch file='${xmlEscape(d.scratch)}'/></disk>`;
  });
  const serverXml = "socket" in server
    ? `<server transport='unix' socket='${xmlEscape(server.socket)}'/>`
    : `<server transport='tcp' name='${xmlEscape(server.host)}' port='${server.port}'/>`;
  return `<domainbackup mode='pull'>\n  ${serverXml}\n  <disks>\n${
    lines.join("\n")
  }\n  </disks>\n</domainbackup>\n`;
}

/** A checkpoint as dirtybit creates or redefines it. */
export interface CheckpointSpec {
  name: string;
  /** Disks that get a bitmap named after the checkpoint; every other listed disk gets none. */
  bitmapDisks: string[];
  /** All disks of the domain (libvirt wants each one's choice). */
  allDisks: string[];
  /** For `--redefine` (a checkpoint made offline): its parent and creation time. */
  redefine?: { parent?: string; creationTime: number };
}

/** `<domaincheckpoint>` for `backup-begin` or `checkpoint-create --redefine`. */
export function checkpointXml(spec: CheckpointSpec): string {
  const disks = spec.allDisks.map((t) => {
    const name = `name='${xmlEscape(t)}'`;
    if (!spec.bitmapDisks.includes(t)) return `    <disk ${name} checkpoint='no'/>`;
    const bitmap = spec.redefine ? ` bitmap='${xmlEscape(spec.name)}'` : "";
    return `    <disk ${name} checkpoint='bitmap'${bitmap}/>`;
  });
  const redefine = spec.redefine
    ? (spec.redefine.parent
      ? `  <parent><name>${xmlEscape(spec.redefine.parent)}</name></parent>\n`
      : "") + `  <creationTime>${spec.redefine.creationTime}</creationTime>\n`
    : "";
  return `<domaincheckpoint>\n  <name>${xmlEscape(spec.name)}</name>\n${redefine}  <disks>\n${
    disks.join("\n")
  }\n  </disks>\n</domaincheckpoint>\n`;
}

/** A checkpoint as `virsh checkpoint-dumpxml --no-domain` shows it. */
export interface CheckpointInfo {
  name: string;
  parent?: string;
  creationTime?: number;
  /** Disk target -> bitmap name, for the disks that have one. */
  bitmaps: Map<string, string>;
}

/** Parses `<domaincheckpoint>` (the `<domain>` inside, if any, is ignored). */
export function parseCheckpoint(xml: string): CheckpointInfo {
  const own = xml.replace(/<domain\b[\s\S]*<\/domain>/, "");
  const name = own.match(/^\s*<domaincheckpoint>\s*<name>([^<]*)<\/name>/)?.[1] ??
    own.match(/<name>([^<]*)<\/name>/)?.[1] ?? "";
  const parent = own.match(/<parent>\s*<name>([^<]*)<\/name>/)?.[1];
  const time = own.match(/<creationTime>(\d+)<\/creationTime>/)?.[1];
  const bitmaps = new Map<string, string>();
  for (const m of own.matchAll(/<disk\b[^>]*>/g)) {
    const target = attr(m[0], "name");
    if (target && attr(m[0], "checkpoint") === "bitmap") {
      bitmaps.set(target, attr(m[0], "bitmap") ?? xmlText(name));
    }
  }
  return {
    name: xmlText(name),
    ...(parent !== undefined ? { parent: xmlText(parent) } : {}),
    ...(time !== undefined ? { creationTime: Number(time) } : {}),
    bitmaps,
  };
}

/**
 * The dirty bitmap a pull backup exports beside an incremental disk's export
 * (named after the disk: its export is named after it too).
 */
export function exportBitmapName(target: string): string {
  return `dirtybit-${target}`;
}

/** The unix socket and scratch files of a running pull backup, from `virsh backup-dumpxml`. */
export function backupPaths(xml: string): string[] {
  const server = xml.match(/<server\b[^>]*>/)?.[0];
  const socket = server ? attr(server, "socket") : undefined;
  const scratch = [...xml.matchAll(/<scratch\b[^>]*>/g)].map((m) => attr(m[0], "file"));
  return [socket, ...scratch].filter((p): p is string => p !== undefined);
}

/** Name and UUID of a domain XML. */
export function domainIdentity(xml: string): { name: string; uuid: string } {
  const name = xml.match(/<name>([^<]*)<\/name>/)?.[1] ?? "";
  const uuid = xml.match(/<uuid>([^<]*)<\/uuid>/)?.[1] ?? "";
  return { name: xmlText(name), uuid: xmlText(uuid) };
}

/** A restored disk a new domain is to use. */
export interface RestoredDisk {
  target: string;
  path: string;
  format: "raw" | "qcow2";
}

/**
 * The definition of a restored copy of a domain: a new name, no UUID and no
 * MAC addresses (libvirt makes new ones, so the copy can run beside the
 * original), each restored disk on its restored file (backing chain
 * dropped: the restore is a whole image), and every other `device='disk'`
 * disk removed, so the copy never opens the original's images. Runtime-only
 * elements (`<alias>`, `<backingStore>`) go too.
 */
export function restoredDomainXml(xml: string, name: string, disks: RestoredDisk[]): string {
  let out = xml.replace(/<name>[^<]*<\/name>/, `<name>${xmlEscape(name)}</name>`)
    .replace(/\s*<uuid>[^<]*<\/uuid>/, "")
    .replace(/\s*<mac address=(['"])[^'"]*\1\s*\/>/g, "")
    .replace(/\s*<backingStore\b[^>]*\/>/g, "")
    .replace(/\s*<backingStore\b[\s\S]*?<\/backingStore>/g, "")
    .replace(/\s*<alias\b[^>]*\/>/g, "");
  out = out.replace(/(\s*)<disk\b([^>]*)>([\s\S]*?)<\/disk>/g, (whole, space, attrs, body) => {
    const target = attr(body.match(/<target\b[^>]*>/)?.[0] ?? "", "dev");
    const restored = disks.find((d) => d.target === target);
    if (!restored) return (attr(`<disk${attrs}>`, "device") ?? "disk") === "disk" ? "" : whole;
    const newAttrs = attrs.replace(/\stype=(['"])[^'"]*\1/, "").trim();
    const driver = body.match(/<driver\b[^>]*>/)?.[0] ?? "";
    const driverAttrs = driver.replace(/^<driver|\/?>$/g, "").replace(
      /\s(type|name)=(['"])[^'"]*\2/g,
      "",
    );
    const newBody =
      `${space}  <driver name='qemu' type='${restored.format}'${driverAttrs.trimEnd()}/>` +
      `${space}  <source file='${xmlEscape(restored.path)}'/>` +
      body.replace(/\s*<driver\b[^>]*\/>/, "").replace(/\s*<source\b[^>]*\/>/, "")
        .replace(/\s*<source\b[\s\S]*?<\/source>/, "");
    return `${space}<disk type='file' ${newAttrs}>${newBody}</disk>`;
  });
  return out;
}
