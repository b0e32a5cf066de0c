/**
 * `dirtybit inspect` and `dirtybit verify`: read streams completely, checking
 * every record and the trailer, without restoring anything.
 *
 * @module
 */
import type { Command } from "./command.ts";
import { flagOf, parseFlags } from "./args.ts";
import { openStreamFile, openStreamStdin, type StreamReader } from "../stream/reader.ts";
import { checkChainOrder } from "../stream/chain.ts";
import type { StreamHeader, StreamTrailer } from "../stream/format.ts";
import { describeError, DirtybitError, UsageError } from "../core/errors.ts";
import { formatBytes } from "../core/bytes.ts";
import { Progress, PROGRESS_FLAGS, PROGRESS_HELP } from "./progress.ts";

/** Header, trailer and record counts of a completely verified stream. */
interface StreamSummary {
  header: StreamHeader;
  trailer: StreamTrailer;
  streamBytes: number;
}

function open(path: string): Promise<StreamReader> {
  return path === "-" ? openStreamStdin() : openStreamFile(path);
}

async function readThrough(
  reader: StreamReader,
  onRecord?: (position: number) => void,
): Promise<StreamSummary> {
  for await (const _ of reader.records()) {
    // Reading verifies each record; the data itself is not needed here.
    onRecord?.(reader.position);
  }
  return { header: reader.header, trailer: reader.trailer, streamBytes: reader.position };
}

function describe(s: StreamSummary): string {
  const h = s.header;
  return [
    `format:        version ${h.version}`,
    `disk:          ${h.disk}`,
    `level:         ${h.level}`,
    `backup id:     ${h.backupId}`,
    `parent id:     ${h.parentId ?? "-"}`,
    `chain id:      ${h.chainId}`,
    `checkpoint:    ${h.checkpoint || "-"}`,
    `created:       ${h.createdAt}`,
    `virtual size:  ${h.virtualSize} (${formatBytes(h.virtualSize)})`,
    `block size:    ${h.blockSize}`,
    `compression:   ${h.compression}`,
    `records:       ${s.trailer.records}`,
    `data bytes:    ${s.trailer.dataBytes} (${formatBytes(s.trailer.dataBytes)})`,
    `zero bytes:    ${s.trailer.zeroBytes} (${formatBytes(s.trailer.zeroBytes)})`,
    `stored bytes:  ${s.trailer.storedBytes} (${formatBytes(s.trailer.storedBytes)})`,
    `stream bytes:  ${s.streamBytes}`,
    `checksum:      ${s.trailer.checksum} (verified)`,
  ].join("\n");
}

export const inspectCommand: Command = {
  name: "inspect",
  summary: "show a backup stream's header and totals (verifies it completely)",
  async run(args) {
    const parsed = parseFlags(
      "inspect",
      args,
      { json: { type: "boolean" } },
      `
usage: dirtybit inspect STREAM [--json]

Reads STREAM ('-' for stdin) to its end, verifying every record and the
trailer, and prints its header and totals.
`,
    );
    if (!parsed) return 0;
    if (parsed.positionals.length !== 1) throw new UsageError("inspect: name exactly one STREAM");
    const summary = await readThrough(await open(parsed.positionals[0]));
    console.log(parsed.values.json ? JSON.stringify(summary, null, 2) : describe(summary));
    return 0;
  },
};

export const verifyCommand: Command = {
  name: "verify",
  summary: "check the integrity of streams, and the chain order when several are given",
  async run(args) {
    const parsed = parseFlags(
      "verify",
      args,
      { json: { type: "boolean" }, ...PROGRESS_FLAGS },
      `
usage: dirtybit verify [--json] STREAM...

Verifies every STREAM completely (records, checksums, trailer). When several
are given they must form a chain in order: a full, then backups whose parent
is the one before. Exit 0 only if all are good; otherwise the exit code of
the first problem, the same as restore gives for it (3 corrupt stream, 4 chain
broken or out of order, 5 unreadable).

  --json              print the results as JSON on stdout${PROGRESS_HELP}
`,
    );
    if (!parsed) return 0;
    const paths = parsed.positionals;
    if (paths.length === 0) throw new UsageError("verify: name at least one STREAM");
    const results: {
      stream: string;
      ok: boolean;
      backupId?: string;
      level?: string;
      error?: string;
    }[] = [];
    let prev: StreamHeader | null = null;
    let exitCode = 0;
    const progress = await Progress.start("verify", parsed.values);
    const sizes = await Promise.all(
      paths.map((p) => p === "-" ? 0 : Deno.stat(p).then((s) => s.size, () => 0)),
    );
    for (const [i, path] of paths.entries()) progress.update(path, 0, sizes[i]);
    let streamBytes = 0;
    for (const [i, path] of paths.entries()) {
      try {
        const summary = await readThrough(
          await open(path),
          (position) => progress.update(path, position, sizes[i]),
        );
        streamBytes += summary.streamBytes;
        if (paths.length > 1) checkChainOrder(i === 0 ? null : prev, summary.header);
        prev = summary.header;
        results.push({
          stream: path,
          ok: true,
          backupId: summary.header.backupId,
          level: summary.header.level,
        });
      } catch (err) {
        if (!(err instanceof DirtybitError)) throw err;
        results.push({ stream: path, ok: false, error: describeError(err, flagOf) });
        exitCode ||= err.exitCode;
        prev = null;
      }
    }
    const bad = results.filter((r) => !r.ok).length;
    progress.finish({
      what: `verify of ${paths.length} stream${paths.length === 1 ? "" : "s"}${
        bad ? ` (${bad} bad)` : ""
      }`,
      read: streamBytes,
      seconds: (Date.now() - progress.startedAt) / 1000,
    });
    if (parsed.values.json) console.log(JSON.stringify(results, null, 2));
    else {
      for (const r of results) {
        console.log(
          r.ok ? `OK   ${r.stream}: ${r.level} ${r.backupId}` : `BAD  ${r.stream}: ${r.error}`,
        );
      }
    }
    return exitCode;
  },
};
