/**
 * The image writers by format name (qemu-img's names, plus `vhd` for `vpc`)
 * and subformat. Adding a format is adding a writer file and one line here.
 *
 * @module
 */
import { UsageError } from "../core/errors.ts";
import { qcow2Writer } from "./qcow2.ts";
import { rawWriter } from "./raw.ts";
import { vhdDynamicWriter, vhdFixedWriter } from "./vhd.ts";
import { vhdxDynamicWriter, vhdxFixedWriter } from "./vhdx.ts";
import { vmdkFlatWriter, vmdkSparseWriter, vmdkStreamWriter } from "./vmdk.ts";
import type { ImageWriter } from "./writer.ts";

/** Every writer; the first of each format is its default subformat. */
export const imageWriters: readonly ImageWriter[] = [
  rawWriter,
  qcow2Writer,
  vmdkStreamWriter,
  vmdkSparseWriter,
  vmdkFlatWriter,
  vhdxDynamicWriter,
  vhdxFixedWriter,
  vhdDynamicWriter,
  vhdFixedWriter,
];

const ALIASES: Record<string, string> = { vhd: "vpc" };

/** The writer for `format` (and `subformat`, case-insensitive; default: the format's first). */
export function getImageWriter(format: string, subformat?: string): ImageWriter {
  const name = ALIASES[format.toLowerCase()] ?? format.toLowerCase();
  const candidates = imageWriters.filter((w) => w.format === name);
  if (candidates.length === 0) {
    const names = [...new Set(imageWriters.map((w) => w.format))].join(", ");
    throw new UsageError(`unknown format '${format}': use one of ${names} (or vhd)`);
  }
  if (subformat === undefined) return candidates[0];
  const found = candidates.find((w) => w.subformat.toLowerCase() === subformat.toLowerCase());
  if (!found) {
    const subs = candidates.map((w) => w.subformat).join(", ");
    throw new UsageError(`unknown subformat '${subformat}' for ${name}: use one of ${subs}`);
  }
  return found;
}
