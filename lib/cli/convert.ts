/**
 * `dirtybit convert`: writes a disk as raw, qcow2, VMDK, VHDX or VHD strictly
 * append-only to a file or stdout, from an NBD export, a local image of any
 * qemu format, or a backup chain.
 *
 * @module
 */
import { basename, dirname, join, resolve } from "node:path";
import type { Command } from "./command.ts";
import { openOutput, refuseTerminalStdout, requireOutputDir } from "./output.ts";
import { Progress, PROGRESS_FLAGS, PROGRESS_HELP } from "./progress.ts";
import { timing } from "./progress_view.ts";
import { withReadProgress } from "../core/source.ts";
import { type FlagTable, integer, type Parsed, parseFlags, required } from "./args.ts";
import { TargetError, UsageError } from "../core/errors.ts";
import type { DiskSource } from "../core/source.ts";
import { NbdSource } from "../nbd/reader.ts";
import { openImageFile } from "../nbd/image_file_source.ts";
import { getImageWriter, imageWriters } from "../formats/registry.ts";
import { flatExtentName } from "../formats/vmdk.ts";
import type { ImageWriteOptions, ImageWriteReport } from "../formats/writer.ts";
import { ChainSource } from "../stream/chain_source.ts";

/** One line per writer, from the registry: `  vmdk vmfs    VMDK vmfs flat ...`. */
function formatHelp(): string {
  const counts = new Map<string, number>();
  for (const w of imageWriters) counts.set(w.format, (counts.get(w.format) ?? 0) + 1);
  const names = imageWriters.map((w) =>
    counts.get(w.format)! > 1 ? `${w.format} ${w.subformat}` : w.format
  );
  const width = Math.max(...names.map((n) => n.length)) + 2;
  return imageWriters.map((w, i) => `  ${names[i].padEnd(width)}${w.summary}`).join("\n");
}

const HELP = `
usage: dirtybit convert --from NBD-URI|IMAGE --format FMT --out FILE|- [options]
       dirtybit convert --chain STREAM... --format FMT --out FILE|- [options]

Writes the disk strictly sequentially (a pipe or an SSH channel works as the
output; no temporary file). Unallocated and zero ranges stay unallocated.

  --from SOURCE        nbd://, nbd+unix:// URI, or a local image of any qemu format
  --chain              the positionals are a backup chain (full, then incrementals)
  --format FMT         ${[...new Set(imageWriters.map((w) => w.format))].join(", ")} (vhd = vpc)
  --subformat SUB      the format's variant (default: its first below)
  --out FILE|-         output file, - for stdout. vmdk vmfs: FILE is the descriptor,
                       the data goes to FILE-flat.vmdk (with -, give --descriptor)
  --descriptor FILE    vmdk vmfs with --out -: where to write the descriptor
  --name NAME          file name recorded in VMDK descriptors (default: from --out)
  --cluster-size SIZE  qcow2 cluster size (default 64K)
  --block-size SIZE    VHDX block size (default 1M)
  --compress-level N   zlib level for vmdk streamOptimized (0-9, default 1)
  --workers N          compression workers (default: CPU count)
  --connections N      NBD connections for reading (default 2)
  --json               print the report as JSON (stderr when --out is -)${PROGRESS_HELP}

Formats and subformats (vhd = vpc):
${formatHelp()}
`;

const FLAGS = {
  from: { type: "string" },
  chain: { type: "boolean" },
  format: { type: "string" },
  subformat: { type: "string" },
  out: { type: "string", path: true },
  descriptor: { type: "string", path: true },
  name: { type: "string" },
  "cluster-size": { type: "string" },
  "block-size": { type: "string" },
  "compress-level": { type: "string" },
  workers: { type: "string" },
  connections: { type: "string" },
  json: { type: "boolean" },
  ...PROGRESS_FLAGS,
} as const satisfies FlagTable;

type Flags = Parsed<typeof FLAGS>;

const UNITS: Record<string, number> = { "": 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/** Parses `64K`, `1M`, `512`, `2MiB` into bytes (UsageError naming the flag otherwise). */
export function parseSize(flag: string, text: string, command = "convert"): number {
  const m = /^(\d+)\s*([KMGT]?)(i?B)?$/i.exec(text.trim());
  if (!m) throw new UsageError(`${command}: --${flag} '${text}' is not a size: use e.g. 64K or 1M`);
  return Number(m[1]) * UNITS[m[2].toUpperCase()];
}

function parseCount(flag: string, text: string | undefined, min: number, max: number) {
  return integer("convert", flag, text, min, max);
}

function isNbdUri(s: string): boolean {
  return /^nbds?(\+(unix|tcp|vsock))?:\/\//.test(s);
}

async function openSource(
  f: Flags,
  positionals: string[],
  connections: number,
): Promise<DiskSource> {
  if (f.chain) {
    if (f.from) throw new UsageError("convert: give either --from or --chain, not both");
    if (positionals.length === 0) {
      throw new UsageError("convert: --chain needs at least one STREAM");
    }
    return await ChainSource.open(positionals);
  }
  const from = required("convert", "from", f.from);
  if (positionals.length) {
    throw new UsageError(
      `convert: unexpected argument '${positionals[0]}': see 'dirtybit convert --help'`,
    );
  }
  return isNbdUri(from)
    ? await NbdSource.open(from, { connections })
    : await openImageFile(resolve(from), { connections });
}

export const convertCommand: Command = {
  name: "convert",
  summary: "write a disk as raw/qcow2/vmdk/vhdx/vhd append-only to a file or pipe",
  async run(args) {
    const parsed = parseFlags("convert", args, FLAGS, HELP);
    if (!parsed) return 0;
    const f = parsed.values;
    const writer = getImageWriter(required("convert", "format", f.format), f.subformat);
    const out = required("convert", "out", f.out);
    const vmfs = writer.format === "vmdk" && writer.subformat === "vmfs";
    if (out === "-") refuseTerminalStdout("convert", "--out - writes the image, which");
    else await requireOutputDir("convert", "out", out);
    if (vmfs && out === "-" && !f.descriptor) {
      throw new UsageError(
        "convert: vmdk vmfs to stdout needs --descriptor FILE for the descriptor",
      );
    }
    const descriptorPath = vmfs ? (out === "-" ? f.descriptor! : out) : undefined;
    const dataPath = vmfs && out !== "-" ? join(dirname(out), flatExtentName(basename(out))) : out;
    const options: ImageWriteOptions = {
      clusterSize: f["cluster-size"] ? parseSize("cluster-size", f["cluster-size"]) : undefined,
      blockSize: f["block-size"] ? parseSize("block-size", f["block-size"]) : undefined,
      compressionLevel: parseCount("compress-level", f["compress-level"], 0, 9),
      workers: parseCount("workers", f.workers, 1, 64),
      fileName: f.name ??
        (descriptorPath ? basename(descriptorPath) : out === "-" ? undefined : basename(out)),
    };
    const connections = parseCount("connections", f.connections, 1, 16) ?? 2;

    const progress = await Progress.start("convert", f);
    const source = withReadProgress(
      await openSource(f, parsed.positionals, connections),
      (done, total) => progress.update(out === "-" ? "stdout" : out, done, total),
    );
    let report: ImageWriteReport;
    try {
      const output = dataPath === "-"
        ? { writable: Deno.stdout.writable, discard: () => Promise.resolve() }
        : await openOutput(dataPath);
      try {
        report = await writer.write(source, output.writable, options);
      } catch (err) {
        progress.fail(err);
        await output.discard();
        throw err;
      }
    } finally {
      await source.close();
    }
    for (const c of report.companions) {
      const path = c.role === "descriptor" && descriptorPath
        ? descriptorPath
        : join(dirname(dataPath), c.name);
      try {
        await Deno.writeFile(path, c.bytes);
      } catch (err) {
        throw new TargetError(`cannot write ${path}: ${(err as Error).message.split("\n")[0]}`);
      }
    }
    const when = timing(progress.startedAt, Date.now(), report.storedBytes);
    progress.finish({
      what: `convert to ${out === "-" ? "stdout" : out}`,
      level: report.subformat === "default"
        ? report.format
        : `${report.format} ${report.subformat}`,
      read: report.storedBytes,
      streamBytes: report.bytesWritten,
      seconds: when.seconds,
    });
    if (f.json) {
      const text = JSON.stringify({
        ...report,
        companions: report.companions.map((c) => c.name),
        ...when,
      });
      if (out === "-") console.error(text);
      else console.log(text);
    }
    return 0;
  },
};
