/**
 * Writes an OVA strictly sequentially: a tar whose first entry is the `.ovf`
 * descriptor, then one streamOptimized VMDK per disk, then a SHA-256 manifest.
 *
 * A tar entry states its size before its data, and the OVF (first) states
 * every VMDK's size, but a compressed VMDK's size is known only once it is
 * written. Rather than staging a disk-sized file, each VMDK is written twice:
 * once into a counter (deflate output is deterministic for the same input and
 * level), then for real; a size that differs between the passes fails the write.
 *
 * @module
 */
import { createHash, type Hash } from "node:crypto";
import { TargetError } from "../core/errors.ts";
import type { DiskSource } from "../core/source.ts";
import { vmdkStreamWriter } from "../formats/vmdk.ts";
import type { ImageWriteOptions } from "../formats/writer.ts";
import { ovfDescriptor } from "./ovf.ts";
import { tarEnd, tarHeader, tarPadding } from "./tar.ts";
import type { VmDefinition } from "../model/vm_definition.ts";
import type { VmwareHardware } from "./vmware_config.ts";

/** One disk of the package, same order as `def.disks`. */
export interface OvaDisk {
  source: DiskSource;
  /** Member name, e.g. `web01-disk1.vmdk`. */
  href: string;
}

/** What went into the package. */
export interface OvaReport {
  /** Member names in archive order (the `.ovf` first). */
  entries: string[];
  bytesWritten: number;
}

/** A sink that only counts. */
function counter(): { stream: WritableStream<Uint8Array>; bytes: () => number } {
  let n = 0;
  return {
    stream: new WritableStream({
      write(chunk) {
        n += chunk.length;
      },
    }),
    bytes: () => n,
  };
}

/**
 * Writes the package `baseName`.ova to `out` (closed on success, aborted on
 * failure). `progress` gets a line per pass.
 */
export async function writeOva(
  out: WritableStream<Uint8Array>,
  baseName: string,
  def: VmDefinition,
  hw: VmwareHardware,
  disks: OvaDisk[],
  options: { compressionLevel?: number; progress?: (line: string) => void } = {},
): Promise<OvaReport> {
  const writeOptions = (href: string): ImageWriteOptions => ({
    fileName: href,
    compressionLevel: options.compressionLevel,
  });
  const sizes: number[] = [];
  for (const d of disks) {
    const c = counter();
    await vmdkStreamWriter.write(d.source, c.stream, writeOptions(d.href));
    sizes.push(c.bytes());
    options.progress?.(`measured ${d.href}: ${c.bytes()} bytes`);
  }
  const mtime = Date.now() / 1000;
  const writer = out.getWriter();
  let written = 0;
  const put = async (bytes: Uint8Array) => {
    await writer.write(bytes);
    written += bytes.length;
  };
  const hashes: [string, Hash][] = [];
  const entries: string[] = [];
  const small = async (name: string, bytes: Uint8Array) => {
    await put(tarHeader(name, bytes.length, mtime));
    await put(bytes);
    await put(tarPadding(bytes.length));
    hashes.push([name, createHash("sha256").update(bytes)]);
    entries.push(name);
  };
  try {
    const ovf = ovfDescriptor(def, hw, disks.map((d, i) => ({ href: d.href, fileSize: sizes[i] })));
    await small(`${baseName}.ovf`, new TextEncoder().encode(ovf));
    for (const [i, d] of disks.entries()) {
      await put(tarHeader(d.href, sizes[i], mtime));
      const hash = createHash("sha256");
      let n = 0;
      const entry = new WritableStream<Uint8Array>({
        async write(chunk) {
          n += chunk.length;
          if (n > sizes[i]) throw new TargetError(`${d.href} grew between the two passes`);
          hash.update(chunk);
          await put(chunk);
        },
      });
      await vmdkStreamWriter.write(d.source, entry, writeOptions(d.href));
      if (n !== sizes[i]) {
        throw new TargetError(
          `${d.href} is ${n} bytes, not the ${sizes[i]} measured: the disk changed`,
        );
      }
      await put(tarPadding(n));
      hashes.push([d.href, hash]);
      entries.push(d.href);
      options.progress?.(`wrote ${d.href} into the OVA`);
    }
    const manifest = hashes.map(([name, h]) => `SHA256(${name})= ${h.digest("hex")}\n`).join("");
    await small(`${baseName}.mf`, new TextEncoder().encode(manifest));
    await put(tarEnd());
    await writer.close();
  } catch (err) {
    await writer.abort(err).catch(() => {});
    throw err;
  }
  return { entries, bytesWritten: written };
}
