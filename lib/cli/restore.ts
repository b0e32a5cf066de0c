/**
 * `dirtybit restore`: applies a full and its incrementals, in order, to a raw
 * or qcow2 image. `-` reads one stream from standard input (the bpipe writer).
 *
 * @module
 */
import type { Command } from "./command.ts";
import { catchStopSignals } from "./stop_signals.ts";
import { choice, parseFlags, required } from "./args.ts";
import { openStreamFile, openStreamStdin } from "../stream/reader.ts";
import { checkChainOrder } from "../stream/chain.ts";
import { RestoreSession } from "../restore/session.ts";
import { CancelledError, UsageError } from "../core/errors.ts";
import { formatFromPath } from "../targets/target.ts";
import { requireOutputDir } from "./output.ts";
import { Progress, PROGRESS_FLAGS, PROGRESS_HELP } from "./progress.ts";
import { timing } from "./progress_view.ts";
import type { StreamReader } from "../stream/reader.ts";
import { runCrossRestore } from "./crossrestore.ts";
import { runLiveRestore } from "./live_restore.ts";
import { restoreAndDefine } from "../restore/define.ts";

const HELP = `
usage: dirtybit restore --out FILE [--format raw|qcow2] [--force] [--json] STREAM...

Applies backup streams to FILE in order: a full first, then its incrementals
(or one stream on top of what FILE already holds: FILE.dbit.json remembers the
last stream applied). '-' reads one stream from standard input.
A stream whose parent is not the last one applied is refused.

  --out FILE      image to restore into (required)
  --format FMT    raw or qcow2 (default: qcow2 for *.qcow2, else raw)
  --force         replace an existing FILE that is not a dirtybit restore target
  --json          print a JSON summary on stdout${PROGRESS_HELP}

A libvirt domain backup (backup --domain) restored as a new domain:
dirtybit restore --define --out DIR [--name NAME] [--connect URI] STREAM...
  restores every disk's chain (the streams of all disks, each disk's in order)
  into DIR/NAME-TARGET.qcow2 and defines domain NAME (default: the original's
  name with -restored) from the definition the streams carry, with a new UUID,
  new MAC addresses and the restored disks (disks not restored are left out).

Live restore into a running VM's disk (see 'dirtybit restore --live --help'):
dirtybit restore --live --qmp SOCKET --node NODE STREAM...

Cross-restore into another hypervisor: dirtybit restore --to proxmox|hyperv|vmware
(see 'dirtybit restore --to proxmox --help').
`;

export const restoreCommand: Command = {
  name: "restore",
  summary: "restore a full and its incrementals to a raw or qcow2 image",
  async run(args) {
    if (args.some((a) => a === "--to" || a.startsWith("--to="))) return await runCrossRestore(args);
    if (args.includes("--live")) return await runLiveRestore(args);
    const parsed = parseFlags(
      "restore",
      args,
      {
        out: { type: "string", path: true },
        format: { type: "string" },
        force: { type: "boolean" },
        json: { type: "boolean" },
        ...PROGRESS_FLAGS,
        define: { type: "boolean" },
        name: { type: "string" },
        connect: { type: "string" },
      },
      HELP,
    );
    if (!parsed) return 0;
    const { values, positionals } = parsed;
    const out = required("restore", "out", values.out);
    const format = choice(
      "restore",
      "format",
      values.format,
      ["raw", "qcow2"],
      values.define ? "qcow2" : formatFromPath(out),
    );
    if (!values.define && (values.name !== undefined || values.connect !== undefined)) {
      throw new UsageError(
        `restore: --${values.name !== undefined ? "name" : "connect"} needs --define`,
      );
    }
    if (positionals.length === 0) {
      throw new UsageError("restore: name at least one STREAM (or - for stdin)");
    }
    await requireOutputDir("restore", "out", out);
    if (positionals.filter((p) => p === "-").length > 0 && positionals.length > 1) {
      throw new UsageError("restore: '-' (stdin) must be the only STREAM");
    }
    // All headers first: a wrong order or a gap among the streams given is refused
    // before anything is written, not after the target was half rebuilt.
    const readers = [];
    const streams = new Map<StreamReader, { name: string; size: number }>();
    for (const path of positionals) {
      const reader = path === "-" ? await openStreamStdin() : await openStreamFile(path);
      // Stdin's size is unknown (0): its progress shows bytes and rate, no ETA.
      const size = path === "-" ? 0 : (await Deno.stat(path)).size;
      streams.set(reader, { name: path === "-" ? "stdin" : path, size });
      readers.push(reader);
    }
    if (values.define) {
      if (positionals.includes("-")) {
        throw new UsageError("restore --define reads stream files, not -");
      }
      const made = await Deno.stat(out).then(() => false, () => true);
      await Deno.mkdir(out, { recursive: true, mode: 0o700 });
      // QEMU (its own user) must reach the images; they stay 0600 and libvirt
      // hands them to that user when the domain starts.
      if (made) await Deno.chmod(out, 0o711);
      const progress = await Progress.start("restore", values);
      let defined;
      try {
        defined = await restoreAndDefine({
          readers,
          outDir: out,
          name: values.name,
          connect: values.connect,
          format,
          force: values.force,
          onApplied: (r, path) =>
            progress.info(`applied ${r.level} ${r.backupId} of ${r.disk} to ${path}`),
        });
      } catch (err) {
        progress.fail(err);
        throw err;
      }
      const line = `defined domain ${defined.name} (${defined.uuid})`;
      progress.info(line);
      progress.close();
      if (!values.quiet) console.error(`dirtybit: ${line}`);
      if (values.json) console.log(JSON.stringify(defined, null, 2));
      return 0;
    }
    for (let i = 1; i < readers.length; i++) {
      checkChainOrder(readers[i - 1].header, readers[i].header);
    }
    const stop = catchStopSignals();
    const progress = await Progress.start("restore", values);
    for (const s of streams.values()) progress.update(s.name, 0, s.size);
    const session = await RestoreSession.open({
      path: out,
      format,
      force: values.force,
      signal: stop.signal,
      onProgress: (reader) => {
        const s = streams.get(reader)!;
        progress.update(s.name, reader.position, s.size);
      },
    });
    const applied = [];
    try {
      for (const reader of readers) {
        const result = await session.applyReader(reader).catch((err) => {
          if (!stop.signal.aborted) throw err;
          throw new CancelledError(
            reader.header.level === "full"
              ? `restore cancelled by a signal; ${out}.partial was removed, ${out} left as it was`
              : `restore cancelled by a signal; ${out} is marked incomplete: restore the chain again from its full`,
          );
        });
        applied.push(result);
        progress.info(`applied ${result.level} ${result.backupId} of ${result.disk} to ${out}`);
      }
    } catch (err) {
      progress.fail(err);
      throw err;
    } finally {
      stop.close();
    }
    await session.close();
    const read = applied.reduce((n, a) => n + a.bytes, 0);
    const streamBytes = readers.reduce((n, r) => n + r.position, 0);
    const when = timing(progress.startedAt, Date.now(), read);
    progress.finish({
      what: `restore to ${out}`,
      level: applied.map((a) => a.level).join("+"),
      read,
      streamBytes,
      seconds: when.seconds,
    });
    if (values.json) {
      console.log(JSON.stringify({ target: out, format, applied, ...when }, null, 2));
    }
    return 0;
  },
};
