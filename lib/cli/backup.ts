/**
 * `dirtybit backup`: a full, incremental or differential backup of the disks
 * of a running QEMU (QMP socket), one stream per disk.
 *
 * @module
 */
import { join } from "node:path";
import type { Command } from "./command.ts";
import { choice, parseFlags, required } from "./args.ts";
import { type DiskBackupResult, type PlannedDisk, runBackup } from "../backup/engine.ts";
import { CancelledError, TargetError, UsageError } from "../core/errors.ts";
import { formatBytes, reportLine } from "./report.ts";
import { compressionLevel } from "../stream/format.ts";

const HELP = `
usage: dirtybit backup --qmp SOCKET --node NODE [--node NODE...] [options]

Backs up the disks (QEMU block nodes) of a running QEMU through a point-in-time
view, reading only what changed since the last backup for an incremental.

  --qmp SOCKET        QMP unix socket of the QEMU process (required)
  --node NODE         block node of a disk; repeat for several disks (required)
  --nbd-socket PATH   unix socket of the NBD server QEMU already runs, if any
                      (otherwise one is started for the job and stopped after)
  --level LEVEL       full, incremental, differential or auto (default auto:
                      incremental when a valid chain exists, else full)
  --state-dir DIR     where chain state and hash DBs live (default
                      $DIRTYBIT_STATE_DIR or /var/lib/dirtybit)
  --out FILE|DIR|-    stream file, directory for one file per disk, or - for
                      stdout (one disk only; e.g. Bacula bpipe). Default: .
  --compress C        zstd:N (1-19) or none (default zstd:3)
  --json              print a JSON summary (on stderr when --out is -)
`;

type Flags = {
  qmp?: string;
  "nbd-socket"?: string;
  node?: string[];
  level?: string;
  "state-dir"?: string;
  out?: string;
  compress?: string;
  json?: boolean;
};

export const backupCommand: Command = {
  name: "backup",
  summary: "back up QEMU disks: full, incremental or differential, via dirty bitmaps",
  async run(args) {
    const parsed = parseFlags<Flags>("backup", args, {
      qmp: { type: "string" },
      "nbd-socket": { type: "string" },
      node: { type: "string", multiple: true },
      level: { type: "string" },
      "state-dir": { type: "string" },
      out: { type: "string" },
      compress: { type: "string" },
      json: { type: "boolean" },
    }, HELP);
    if (!parsed) return 0;
    const { values, positionals } = parsed;
    if (positionals.length > 0) {
      throw new UsageError(`backup: unexpected argument '${positionals[0]}'`);
    }
    const qmp = required("backup", "qmp", values.qmp);
    const nodes = values.node ?? [];
    if (nodes.length === 0) {
      throw new UsageError("backup: --node is required: see 'dirtybit backup --help'");
    }
    const level = choice("backup", "level", values.level, [
      "full",
      "incremental",
      "differential",
      "auto",
    ], "auto");
    const compression = values.compress ?? "zstd:3";
    try {
      compressionLevel(compression);
    } catch {
      throw new UsageError(
        `backup: --compress must be zstd:1 to zstd:19 or none, not '${compression}'`,
      );
    }
    const out = values.out ?? ".";
    const toStdout = out === "-";
    if (toStdout && nodes.length > 1) {
      throw new UsageError("backup: --out - takes one disk; give a directory for several --node");
    }
    const outDir = toStdout ? null : await directoryOrNull(out);
    if (!toStdout && !outDir && nodes.length > 1) {
      throw new UsageError(`backup: --out ${out} must be an existing directory for several disks`);
    }
    const stateDir = values["state-dir"] ?? Deno.env.get("DIRTYBIT_STATE_DIR") ??
      "/var/lib/dirtybit";
    await Deno.mkdir(stateDir, { recursive: true, mode: 0o700 });

    const files = new Map<string, StreamFile>();
    const controller = new AbortController();
    const onSignal = () => controller.abort();
    Deno.addSignalListener("SIGINT", onSignal);
    Deno.addSignalListener("SIGTERM", onSignal);
    let results: DiskBackupResult[];
    try {
      results = await runBackup({
        qmp,
        nbdSocket: values["nbd-socket"],
        nodes,
        level,
        stateDir,
        compression,
        signal: controller.signal,
        // Warnings (why a full was taken, leftovers removed) are messages, not
        // progress: scripts and bpipe logs must see them without a terminal.
        onMessage: (kind, text) =>
          kind === "warning" ? console.error(`dirtybit: warning: ${text}`) : reportLine(text),
      }, async (disk: PlannedDisk) => {
        if (toStdout) return Deno.stdout.writable;
        if (!outDir && await isSpecialFile(out)) {
          // A device or FIFO (e.g. /dev/null, a pipe) is written as it is:
          // renaming a partial file over it would replace the device.
          return (await openOrFail(out, { write: true })).writable;
        }
        const final = outDir ? join(outDir, streamFileName(disk)) : out;
        const partial = `${final}.partial`;
        const entry = { partial, final, complete: false };
        files.set(disk.node, entry);
        const file = await openOrFail(partial, { write: true, create: true, truncate: true });
        return streamFileSink(file, entry);
      });
    } catch (err) {
      // Also a complete file of a disk that finished: the backup was not accepted.
      for (const f of files.values()) {
        await Deno.remove(f.complete ? f.final : f.partial).catch(() => {});
      }
      if (controller.signal.aborted) {
        throw new CancelledError(
          "backup cancelled by a signal; the changes stay in the bitmap for the next backup",
        );
      }
      throw err;
    } finally {
      Deno.removeSignalListener("SIGINT", onSignal);
      Deno.removeSignalListener("SIGTERM", onSignal);
    }
    const summary = results.map((r) => ({
      ...r,
      file: files.get(r.node)?.final ?? (toStdout ? "-" : out),
    }));
    for (const r of summary) {
      reportLine(
        `${r.diskName}: ${r.level} ${r.backupId} -> ${r.file}: dirty ${
          formatBytes(r.stats.dirtyBytes)
        }, ` +
          `unchanged ${formatBytes(r.stats.unchangedBytes)}, zero ${
            formatBytes(r.stats.zeroBytes)
          }, ` +
          `stored ${formatBytes(r.stats.dataBytes)}, stream ${formatBytes(r.streamBytes)}`,
      );
    }
    if (values.json) {
      const text = JSON.stringify(summary, null, 2) + "\n";
      if (toStdout) Deno.stderr.writeSync(new TextEncoder().encode(text));
      else console.log(text.trimEnd());
    }
    return 0;
  },
};

/** A disk's stream file: written as `partial`, renamed to `final` once complete. */
interface StreamFile {
  partial: string;
  final: string;
  complete: boolean;
}

/**
 * A stream file that, once complete, is synced and renamed into place: before
 * the engine commits the checkpoint, so an accepted backup never lacks its
 * stream (a crash in between leaves at worst the complete stream of a backup
 * that was not accepted, which nothing builds on).
 */
function streamFileSink(file: Deno.FsFile, entry: StreamFile): WritableStream<Uint8Array> {
  return new WritableStream({
    async write(chunk) {
      for (let done = 0; done < chunk.length;) done += await file.write(chunk.subarray(done));
    },
    async close() {
      await file.sync();
      file.close();
      await Deno.rename(entry.partial, entry.final);
      entry.complete = true;
    },
    abort() {
      file.close();
    },
  });
}

/** `DISK-LEVEL-BACKUPID.dbit`, with the disk name made file-name safe. */
export function streamFileName(disk: PlannedDisk): string {
  return `${disk.diskName.replace(/[^A-Za-z0-9_.-]/g, "_")}-${disk.level}-${disk.backupId}.dbit`;
}

async function directoryOrNull(path: string): Promise<string | null> {
  try {
    return (await Deno.stat(path)).isDirectory ? path : null;
  } catch {
    return null;
  }
}

/** True for an existing path that is not a regular file or directory (device, FIFO, socket). */
async function isSpecialFile(path: string): Promise<boolean> {
  try {
    const info = await Deno.stat(path);
    return !info.isFile && !info.isDirectory;
  } catch {
    return false;
  }
}

async function openOrFail(path: string, options: Deno.OpenOptions): Promise<Deno.FsFile> {
  try {
    return await Deno.open(path, options);
  } catch (err) {
    throw new TargetError(`cannot open ${path} for writing: ${(err as Error).message}`);
  }
}
