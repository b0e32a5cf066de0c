/**
 * `restore --define`: restores every disk of a libvirt domain backup (`backup
 * --domain`) into a directory and defines a new domain on the restored
 * images, from the domain XML the streams carry (`metadata.libvirt.xml`):
 * a new name, a new UUID and new MAC addresses (libvirt makes them), so the
 * copy can run beside the original.
 *
 * @module
 */
import { join } from "node:path";
import { UsageError } from "../core/errors.ts";
import { checkChainOrder } from "../stream/chain.ts";
import type { StreamReader } from "../stream/reader.ts";
import { defineDomain, type HostShell, LocalShell, SYSTEM_URI } from "../hosts/virsh.ts";
import { type RestoredDisk, restoredDomainXml } from "../hosts/libvirt_xml.ts";
import { type AppliedStream, RestoreSession } from "./session.ts";

/** What to restore and define. */
export interface DefineRequest {
  /** Headers read; the streams of each disk in chain order. */
  readers: StreamReader[];
  outDir: string;
  /** Name of the new domain (default: the original's name with `-restored`). */
  name?: string;
  connect?: string;
  format: "raw" | "qcow2";
  force?: boolean;
  signal?: AbortSignal;
  onApplied?: (applied: AppliedStream, path: string) => void;
}

/** The domain defined and where its disks are. */
export interface DefinedDomain {
  name: string;
  uuid: string;
  disks: RestoredDisk[];
  applied: AppliedStream[];
}

/** The domain XML a stream carries, if it was made by `backup --domain`. */
export function streamDomainXml(reader: StreamReader): { domain: string; xml: string } | undefined {
  const lv = reader.header.metadata?.libvirt as { domain?: unknown; xml?: unknown } | undefined;
  return typeof lv?.xml === "string" && typeof lv.domain === "string"
    ? { domain: lv.domain, xml: lv.xml }
    : undefined;
}

/** Restores every disk's chain, then defines the domain (see the module doc). */
export async function restoreAndDefine(
  req: DefineRequest,
  shell: HostShell = new LocalShell(),
): Promise<DefinedDomain> {
  const groups = new Map<string, StreamReader[]>();
  for (const r of req.readers) {
    const group = groups.get(r.header.disk) ?? [];
    if (group.length) checkChainOrder(group.at(-1)!.header, r.header);
    groups.set(r.header.disk, [...group, r]);
  }
  const source = streamDomainXml(req.readers.at(-1)!);
  if (!source) {
    throw new UsageError((p) =>
      `restore ${p("define")}: the streams carry no libvirt domain definition ` +
      `(make them with backup ${p("domain")})`
    );
  }
  const name = req.name ?? `${source.domain}-restored`;
  if (!/^[A-Za-z0-9_.+-]+$/.test(name)) {
    throw new UsageError((p) =>
      `restore ${p("define")}: ${p("name")} ${name}: use letters, digits, '.', '_', '+' or '-'`
    );
  }
  const disks: RestoredDisk[] = [];
  const applied: AppliedStream[] = [];
  for (const [disk, readers] of groups) {
    const path = join(req.outDir, `${name}-${disk.replace(/[^A-Za-z0-9_.-]/g, "_")}.${req.format}`);
    const session = await RestoreSession.open({
      path,
      format: req.format,
      force: req.force,
      signal: req.signal,
    });
    for (const reader of readers) {
      const result = await session.applyReader(reader);
      applied.push(result);
      req.onApplied?.(result, path);
    }
    await session.close();
    disks.push({ target: disk, path, format: req.format });
  }
  const xmlFile = join(req.outDir, `${name}.xml`);
  await Deno.writeTextFile(xmlFile, restoredDomainXml(source.xml, name, disks), { mode: 0o600 });
  const domain = await defineDomain(shell, req.connect ?? SYSTEM_URI, xmlFile, name);
  return { name: domain.name, uuid: domain.uuid, disks, applied };
}
