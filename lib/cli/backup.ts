/**
 * `dirtybit backup`: a full, incremental or differential backup of the disks
 * of a running QEMU (QMP socket), one stream per disk.
 *
 * @module
 */
import { basename, dirname, resolve } from "node:path";
import { catchStopSignals } from "./stop_signals.ts";
import type { Command } from "./command.ts";
import { refuseTerminalStdout, requireOutputDir } from "./output.ts";
import { makeDirectory } from "../core/files.ts";
import {
  choice,
  compressionFlag,
  flagOf,
  flagsOf,
  type FlagTable,
  type Parsed,
  parseFlags,
  required,
} from "./args.ts";
import type { BackupRecord } from "../model/disk_state.ts";
import { runBackup, type SinkFactory } from "../backup/engine.ts";
import type { DiskBackupResult, PlannedDisk } from "../backup/plan.ts";
import { runVmBackup, type VmSource } from "../backup/vm_job.ts";
import { flagToParam, parseParamEntries } from "../params/params.ts";
import { domainSourceFromParams, vmSourceFromParams } from "../params/sources.ts";
import { type DomainSource, runDomainBackup } from "../backup/domain_job.ts";
import { CancelledError, UsageError } from "../core/errors.ts";
import { formatBytes } from "../core/bytes.ts";
import { Progress, PROGRESS_FLAGS, PROGRESS_HELP } from "./progress.ts";
import { timing } from "./progress_view.ts";
import { DEFAULT_COMPRESSION } from "../stream/compression.ts";
import { openSinkDestination } from "../sinks/registry.ts";
import { REQUESTED_LEVELS } from "../core/level.ts";
import type { MessageKind } from "../core/log.ts";
import { cliBackupStateDir } from "../params/state_dir.ts";

const HELP = `
usage: dirtybit backup --qmp SOCKET --node NODE [--node NODE...] [options]
       dirtybit backup --domain NAME|UUID [libvirt options] [options]
       dirtybit backup --vm VM [CloudStack options] [options]

Backs up the disks (QEMU block nodes) of a running QEMU through a point-in-time
view, reading only what changed since the last backup for an incremental.
With --vm, the VM is found through CloudStack and read on its KVM host; with
--domain, libvirt's backup API reads the domain, running or shut off.

  --qmp SOCKET        QMP unix socket of the QEMU process (not with --vm or
                      --domain, which find it themselves)
  --node NODE         block node of a disk; repeat for several disks (with
                      --qmp)
  --nbd-socket PATH   unix socket of the NBD server QEMU already runs, if any
                      (otherwise one is started for the job and stopped after)
  --level LEVEL       full, incremental, differential or auto (default auto:
                      incremental when a valid chain exists, else full)
  --state-dir DIR     where chain state and hash DBs live (default
                      $DIRTYBIT_STATE_DIR or /var/lib/dirtybit)
  --out FILE|DIR|-    stream file, directory for one file per disk, or - for
                      stdout (one disk only; e.g. Bacula bpipe). Default: .
  --compress C        none, zstd or zstd:N (1-19) (default zstd:3)
  --json              print a JSON summary (on stderr when --out is -); a disk
                      that got a full instead of the level asked for carries
                      "fallback": "<reason>"
  --take-over         back up disks whose checkpoint bitmaps belong to the
                      chain of another state directory: remove them and take
                      a full (without it such a disk is refused, exit 4)${PROGRESS_HELP}

A disk is backed up by one job at a time: another job on it (from any state
directory, backup or replication) makes this one fail with "busy" (exit 2).

libvirt domain (instead of --qmp/--node; disks are named by their target, vda):
  --domain NAME|UUID  the domain, running or shut off, through libvirt's own
                      checkpoints and backup jobs (state in STATE_DIR/libvirt-UUID)
  --connect URI       libvirt URI (default qemu:///system; or qemu+ssh://...)
  --disk DISK         back up only this disk (target or image path); repeat
  --exclude-disk DISK leave this disk out; repeat
  --scratch-dir DIR   where libvirt keeps a running domain's fleecing files and
                      NBD socket (default /var/lib/libvirt/qemu/dirtybit)
  --ssh-key FILE, --known-hosts FILE
                      with --connect qemu+ssh://[user@]host[:port]/system: virsh
                      (and for a shut-off domain qemu-nbd) runs on that host
                      over SSH and the NBD data comes through an SSH tunnel
  Disks that cannot carry a dirty bitmap (raw images, network disks) get a full
  backup every time, with the reason in the log and in --json (fallback).

CloudStack VM (instead of --qmp/--node; disks are named by their volume id):
  --vm VM             UUID, name or instance name (i-2-10-VM): its domain on
                      its KVM host, as --domain does; a Stopped VM's volumes
                      are read on primary storage through a host of its cluster
  --url URL, --apikey KEY, --secretkey-file FILE (or --secretkey KEY),
  --config FILE, --verify-ssl BOOL, --ca-file FILE
                      the API endpoint and keys, as for 'dirtybit api' (also
                      from DIRTYBIT_URL, DIRTYBIT_APIKEY, DIRTYBIT_SECRETKEY_FILE,
                      DIRTYBIT_CONFIG)
  --disks LIST        volumes to back up: names, ids, device ids or vda/vdb
                      (comma separated; default all)
  --nbd-access-mode M ssh_tunnel (default: NBD through SSH), direct (NBD to
                      the host's --nbd-port, default 10809) or api_only
                      (CloudStack snapshot + download: always full, slow)
  --ssh-user U, --ssh-port N, --ssh-key FILE, --known-hosts FILE
                      how to reach the KVM host (root, 22, ~/.ssh/id_*, the
                      system's known_hosts; host keys are always verified)
  --quiesce BOOL      freeze guest file systems for the point in time
                      (default true; no guest agent: crash-consistent with a
                      warning; a freeze that fails or times out fails the job)
`;

/** Flags of the CloudStack VM source, each a row of the parameter table. */
const VM_FLAGS = [
  "vm",
  "url",
  "apikey",
  "secretkey",
  "secretkey-file",
  "verify-ssl",
  "ca-file",
  "disks",
  "nbd-access-mode",
  "nbd-port",
  "ssh-user",
  "ssh-port",
  "ssh-key",
  "known-hosts",
  "quiesce",
] as const;

/** Flags of the libvirt domain source, each a row of the parameter table. */
const DOMAIN_FLAGS = ["domain", "connect", "scratch-dir"] as const;
const DOMAIN_LIST_FLAGS = ["disk", "exclude-disk"] as const;

const FLAGS = {
  qmp: { type: "string", path: true },
  "nbd-socket": { type: "string", path: true },
  node: { type: "string", multiple: true },
  level: { type: "string" },
  "state-dir": { type: "string", path: true },
  out: { type: "string", path: true },
  compress: { type: "string" },
  json: { type: "boolean" },
  "take-over": { type: "boolean" },
  config: { type: "string", path: true },
  ...PROGRESS_FLAGS,
  ...flagsOf(VM_FLAGS, { type: "string" }),
  domain: { type: "string" },
  connect: { type: "string" },
  "scratch-dir": { type: "string", path: true },
  ...flagsOf(DOMAIN_LIST_FLAGS, { type: "string", multiple: true }),
} as const satisfies FlagTable;

type Flags = Parsed<typeof FLAGS>;

export const backupCommand: Command = {
  name: "backup",
  summary: "back up QEMU disks: full, incremental or differential, via dirty bitmaps",
  async run(args) {
    const parsed = parseFlags("backup", args, FLAGS, HELP);
    if (!parsed) return 0;
    const { values, positionals } = parsed;
    if (positionals.length > 0) {
      throw new UsageError(`backup: unexpected argument '${positionals[0]}'`);
    }
    const domain = domainSource(values);
    const source = domain ? null : await vmSource(values);
    const qmp = source || domain ? "" : required("backup", "qmp", values.qmp);
    const nodes = values.node ?? [];
    if (!source && !domain && nodes.length === 0) {
      throw new UsageError("backup: --node is required: see 'dirtybit backup --help'");
    }
    const level = choice("backup", "level", values.level, REQUESTED_LEVELS, "auto");
    const compression = compressionFlag("backup", values.compress) ?? DEFAULT_COMPRESSION;
    const out = values.out ?? ".";
    const toStdout = out === "-";
    if (toStdout) refuseTerminalStdout("backup", "--out - writes the backup stream, which");
    if (toStdout && nodes.length > 1) {
      throw new UsageError("backup: --out - takes one disk; give a directory for several --node");
    }
    if (!toStdout) await requireOutputDir("backup", "out", out);
    const dest = await openSinkDestination(out);
    const outDir = dest.dir;
    if (!toStdout && !outDir && nodes.length > 1) {
      throw new UsageError(`backup: --out ${out} must be an existing directory for several disks`);
    }
    const stateDir = cliBackupStateDir(values["state-dir"]);
    await makeDirectory(stateDir, "the state directory", { mode: 0o700 });

    const progress = await Progress.start("backup", values);
    const files = new Map<string, string>();
    const stop = catchStopSignals();
    let results: DiskBackupResult[];
    let sinks = 0;
    try {
      const settings = {
        level,
        stateDir,
        takeOver: values["take-over"] ?? false,
        streamPath: (disk: PlannedDisk) => files.get(disk.diskName),
        // An incremental is restored with its parent: a parent written to this
        // directory and gone from it since means the chain is broken here.
        checkParent: outDir ? (parent: BackupRecord) => parentMissing(outDir, parent) : undefined,
        compression,
        signal: stop.signal,
        // Warnings (leftovers removed, a fallback to full) are messages, not
        // progress: scripts and bpipe logs must see them without a terminal.
        onMessage: (kind: MessageKind, text: string) =>
          kind === "warning" ? progress.warn(text) : progress.info(text),
        onProgress: progress.update,
      };
      const sinkFor: SinkFactory = async (disk: PlannedDisk, run) => {
        // A VM's disk count is known only once it is resolved.
        if (++sinks > 1 && !outDir) {
          throw new UsageError(
            `backup: --out ${out} takes one disk and the VM has several: give a directory or --disks`,
          );
        }
        const sink = await dest.sink(streamFileName(disk), run);
        if (sink.path) files.set(disk.diskName, sink.path);
        return sink;
      };
      results = domain
        ? await runDomainBackup(domain, settings, sinkFor)
        : source
        ? await runVmBackup(source, settings, sinkFor)
        : await runBackup({ ...settings, qmp, nbdSocket: values["nbd-socket"], nodes }, sinkFor);
    } catch (err) {
      progress.fail(err);
      if (stop.signal.aborted) {
        throw new CancelledError(
          "backup cancelled by a signal; the changes stay in the bitmap for the next backup",
        );
      }
      throw err;
    } finally {
      stop.close();
    }
    const endedAt = Date.now();
    const read = results.reduce((n, r) => n + r.stats.dirtyBytes, 0);
    const when = timing(progress.startedAt, endedAt, read);
    const summary = results.map((r) => ({
      ...r,
      file: files.get(r.diskName) ?? (toStdout ? "-" : out),
      ...when,
    }));
    for (const r of summary) {
      progress.info(
        `${r.diskName}: ${r.level} ${r.backupId} -> ${r.file}: dirty ${
          formatBytes(r.stats.dirtyBytes)
        }, ` +
          `unchanged ${formatBytes(r.stats.unchangedBytes)}, zero ${
            formatBytes(r.stats.zeroBytes)
          }, ` +
          `stored ${formatBytes(r.stats.dataBytes)}, stream ${formatBytes(r.streamBytes)}`,
      );
    }
    progress.finish({
      what: `backup of ${results.length === 1 ? results[0].diskName : `${results.length} disks`}`,
      level: [...new Set(results.map((r) => r.level))].join("+"),
      read,
      stored: results.reduce((n, r) => n + r.stats.dataBytes, 0),
      streamBytes: results.reduce((n, r) => n + r.streamBytes, 0),
      seconds: when.seconds,
    });
    if (values.json) {
      const text = JSON.stringify(summary, null, 2) + "\n";
      if (toStdout) Deno.stderr.writeSync(new TextEncoder().encode(text));
      else console.log(text.trimEnd());
    }
    return 0;
  },
};

/** The libvirt domain source of `--domain` and its flags, or null without `--domain`. */
function domainSource(values: Flags): DomainSource | null {
  const given = DOMAIN_FLAGS.filter((f) => values[f] !== undefined);
  const lists = DOMAIN_LIST_FLAGS.filter((f) => values[f] !== undefined);
  if (!values.domain) {
    if (given.length > 0 || lists.length > 0) {
      throw new UsageError(`backup: --${given[0] ?? lists[0]} needs --domain`);
    }
    return null;
  }
  if (values.qmp !== undefined || values.node !== undefined || values.vm !== undefined) {
    throw new UsageError("backup: give one of --domain, --vm or --qmp/--node");
  }
  const ssh = (["ssh-key", "known-hosts"] as const).filter((f) => values[f] !== undefined);
  const vmOnly = VM_FLAGS.find((f) => values[f] !== undefined && !(ssh as string[]).includes(f));
  if (vmOnly) throw new UsageError(`backup: --${vmOnly} needs --vm`);
  const entries: [string, string][] = [...given, ...ssh].map((f) => [flagToParam(f), values[f]!]);
  for (const f of lists) for (const v of values[f]!) entries.push([flagToParam(f), v]);
  return domainSourceFromParams(parseParamEntries(entries));
}

/** The CloudStack VM source of `--vm` and its flags, or null without `--vm`. */
async function vmSource(values: Flags): Promise<VmSource | null> {
  const given = VM_FLAGS.filter((f) => values[f] !== undefined);
  if (!values.vm) {
    if (given.length > 0 || values.config !== undefined) {
      throw new UsageError(`backup: --${given[0] ?? "config"} needs --vm`);
    }
    return null;
  }
  if (values.qmp !== undefined || values.node !== undefined || values["nbd-socket"]) {
    throw new UsageError("backup: give --vm or --qmp/--node, not both");
  }
  const params = parseParamEntries(given.map((f) => [flagToParam(f), values[f]!]));
  return await vmSourceFromParams(params, {
    config: values.config,
    warn: (w) => console.error(`dirtybit: warning: ${w(flagOf)}`),
  });
}

/** `DISK-LEVEL-BACKUPID.dbit`, with the disk name made file-name safe. */
export function streamFileName(disk: PlannedDisk): string {
  return `${disk.diskName.replace(/[^A-Za-z0-9_.-]/g, "_")}-${disk.level}-${disk.backupId}.dbit`;
}

/** Why `parent` cannot be a parent here: its stream was written to `dir` and is gone. */
async function parentMissing(dir: string, parent: BackupRecord): Promise<string | undefined> {
  if (!parent.stream || dirname(parent.stream) !== resolve(dir)) return undefined;
  if (await Deno.stat(parent.stream).then(() => true, () => false)) return undefined;
  return `the stream of its parent backup ${parent.backupId} is no longer in ${dir} ` +
    `(${basename(parent.stream)})`;
}
