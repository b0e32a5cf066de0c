/**
 * From the STREAM arguments of a cross-restore to the disks to push: streams
 * grouped by disk into chains (full first, then incrementals, in the order
 * given), each opened as a {@link ChainSource}, and the VM definition the
 * backup stored in its stream headers (`metadata.vm`), reconciled with the
 * disks actually given.
 *
 * @module
 */
import type { DiskSource } from "../core/source.ts";
import { InputError, UsageError, wrapError } from "../core/errors.ts";
import { ChainSource } from "../stream/chain_source.ts";
import {
  decodeHeader,
  decodeHeaderPrefix,
  HEADER_PREFIX_SIZE,
  type StreamHeader,
} from "../stream/format.ts";
import { parseVmDefinition, type VmDefinition, type VmDisk } from "../model/vm_definition.ts";
import { openStreamPath } from "../stream/reader.ts";
import { concatBytes } from "../core/bytes.ts";

/** One disk to restore: its chain and its place in the VM. */
export interface ChainDisk {
  readonly disk: VmDisk;
  readonly source: DiskSource;
}

/** The opened chains and the VM definition that goes with them. */
export interface OpenedChains {
  readonly definition: VmDefinition;
  /** Same order as `definition.disks`. */
  readonly disks: ChainDisk[];
  /** Why the definition differs from what the backup stored, one line each. */
  readonly notes: string[];
  close(): Promise<void>;
}

/** Reads only the header of a stream file (prefix, JSON, checksum). */
export async function readStreamHeader(path: string): Promise<StreamHeader> {
  const file = await openStreamPath(path);
  try {
    const prefix = await readExactly(file, HEADER_PREFIX_SIZE, path);
    const jsonLength = decodeHeaderPrefix(prefix);
    const rest = await readExactly(file, jsonLength + 8, path);
    return decodeHeader(concatBytes(prefix, rest));
  } catch (err) {
    if (err instanceof InputError) throw wrapError(err, InputError, `${path}: ${err.message}`);
    throw err;
  } finally {
    file.close();
  }
}

async function readExactly(file: Deno.FsFile, n: number, path: string): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  let at = 0;
  while (at < n) {
    const got = await file.read(buf.subarray(at));
    if (got === null) throw new InputError(`${path}: stream ends inside its header`);
    at += got;
  }
  return buf;
}

/** Used when the streams carry no definition (e.g. backups of a bare QEMU node). */
function fallbackDefinition(headers: StreamHeader[][]): VmDefinition {
  return {
    name: headers[0][0].disk,
    cpus: 1,
    memoryMiB: 1024,
    firmware: "bios",
    machine: "pc",
    disks: headers.map((h, i) => ({
      name: h[0].disk,
      bus: "virtio-blk",
      deviceId: i,
      size: h.at(-1)!.virtualSize,
      boot: i === 0,
    })),
    nics: [],
    osType: "",
    osFamily: "linux",
  };
}

/**
 * Groups `paths` by disk (each group in the order given), reads the VM
 * definition from the newest header that has one, and opens every chain
 * (verifying it completely). Disks of the definition without streams are
 * left out; streams of disks it does not name are added after its disks.
 */
export async function openChains(paths: string[]): Promise<OpenedChains> {
  if (paths.length === 0) throw new UsageError("restore: name at least one STREAM");
  if (paths.includes("-")) {
    throw new UsageError(
      "cross-restore: a STREAM cannot be '-': a cross-restore reads each stream more than once " +
        "(headers, then the chain; an OVA twice), which stdin cannot do; save the stream to a " +
        "file and name the file",
    );
  }
  const groups = new Map<string, { paths: string[]; headers: StreamHeader[] }>();
  for (const path of paths) {
    const header = await readStreamHeader(path);
    const g = groups.get(header.disk) ?? { paths: [], headers: [] };
    g.paths.push(path);
    g.headers.push(header);
    groups.set(header.disk, g);
  }
  const notes: string[] = [];
  const all = [...groups.values()];
  const stored = all.map((g) => g.headers.findLast((h) => h.metadata?.vm !== undefined))
    .find((h) => h !== undefined);
  let def: VmDefinition;
  if (stored) {
    def = parseVmDefinition(stored.metadata!.vm, `${stored.disk} backup ${stored.backupId}`);
  } else {
    def = fallbackDefinition(all.map((g) => g.headers));
    notes.push(
      "the streams carry no VM definition: 1 CPU, 1024 MiB, BIOS, virtio-blk, no NICs " +
        "(the command line's cross-restore can override CPUs, memory and firmware)",
    );
  }
  const disks: VmDisk[] = [];
  for (const d of def.disks) {
    const g = groups.get(d.name);
    if (!g) {
      notes.push(
        `disk ${d.name} of the VM is not among the streams given: the VM is restored without it`,
      );
      continue;
    }
    disks.push({ ...d, size: g.headers.at(-1)!.virtualSize });
  }
  const template = def.disks.find((d) => d.boot) ?? def.disks[0];
  for (const [name, g] of groups) {
    if (disks.some((d) => d.name === name)) continue;
    notes.push(`disk ${name} is not in the VM definition: added as a ${template.bus} data disk`);
    disks.push({
      name,
      bus: template.bus,
      deviceId: Math.max(-1, ...disks.map((d) => d.deviceId)) + 1,
      size: g.headers.at(-1)!.virtualSize,
      boot: false,
    });
  }
  if (!disks.some((d) => d.boot)) {
    notes.push(`the boot disk is not among the streams: ${disks[0].name} becomes the boot disk`);
    disks[0] = { ...disks[0], boot: true };
  }
  const opened: ChainDisk[] = [];
  try {
    for (const d of disks) {
      opened.push({ disk: d, source: await ChainSource.open(groups.get(d.name)!.paths) });
    }
  } catch (err) {
    await Promise.all(opened.map((o) => o.source.close()));
    throw err;
  }
  return {
    definition: { ...def, disks },
    disks: opened,
    notes,
    close: async () => {
      await Promise.all(opened.map((o) => o.source.close()));
    },
  };
}
