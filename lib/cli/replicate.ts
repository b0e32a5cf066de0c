/**
 * `dirtybit replicate receive|seed|push|status`: continuous DR replication
 * (lib/replication). Progress and events go to stderr; status to stdout.
 *
 * @module
 */
import { catchStopSignals } from "./stop_signals.ts";
import type { CliHooks, Command } from "./command.ts";
import { flagHelp, type Params } from "../params/params.ts";
import { type FlagTable, parseParamFlags, required } from "./args.ts";
import { fileSystemError, UsageError } from "../core/errors.ts";
import { QmpSocket } from "../qemu/qmp.ts";
import { describeRate } from "../replication/bandwidth.ts";
import { isReplicaName, REPLICA_NAME_RULE } from "../replication/messages.ts";
import { compressLevelOf, loadPsk, parseHostPort, retryPolicyOf } from "../replication/setup.ts";
import { Receiver } from "../replication/receiver.ts";
import type { SendOptions } from "../replication/batch.ts";
import {
  type ReplicatedDisk,
  type ReplicationTarget,
  senderWorkDir,
} from "../replication/sender_state.ts";
import { runDaemon, type ScheduledDisk } from "../replication/daemon.ts";
import type { Notify } from "../replication/notify.ts";
import { pushCycles, seedOnce } from "../replication/push.ts";
import { CYCLE_PARAMS, DISK_PARAMS, parseDaemonConfig } from "./daemon_config.ts";
import { toPrometheus, toText } from "../replication/status.ts";
import { replicationStatus } from "../replication/status_query.ts";
import { ReplicaStore } from "../replication/store.ts";
import { makeDirectory } from "../core/files.ts";
import { Progress, PROGRESS_FLAGS } from "./progress.ts";
import { cliReplicationStateDir } from "../params/state_dir.ts";

const HELP = `
usage: dirtybit replicate receive --listen HOST:PORT --psk-file F --replica-dir DIR [--replica-format qcow2|raw]
       dirtybit replicate seed    --qmp SOCKET --node NODE --dr HOST:PORT --psk-file F [--name NAME] [--state-dir DIR]
       dirtybit replicate push    (same as seed) [--once | --cycles N] [--cycle-interval S]
                                  [--bandwidth-limit RATE] [--retry-count N --retry-delay-ms MS --retry-jitter-ms MS]
                                  seed and push: [--quiet] [--progress-interval S] [--log-file FILE]
       dirtybit replicate daemon  --config FILE
       dirtybit replicate status  [--state-dir DIR | --dr HOST:PORT --psk-file F] [--json | --prometheus]

Replicates a QEMU disk to a DR receiver over an AES-256-GCM channel keyed from
a pre-shared key (at least 32 characters, in a file only its owner may read:
chmod 600; never on the command line, where ps shows it). A cycle counts
only once the receiver has it durably; an unreachable receiver just makes the
next cycle larger. SIGTERM stops cleanly; the next run resumes.

  --listen HOST:PORT      receive: address to listen on (default port 10900)
  --replica-dir DIR       receive: replicas (NAME.qcow2|raw), journals and state
  --replica-format FMT    receive: qcow2 (default) or raw, for new replicas
  --dr HOST:PORT          the receiver (or --dr-host and --dr-port)
  --name NAME             replica name (default: the node name)
  --work-dir DIR          temporary overlays, writable by QEMU (default: STATE-DIR/work/NAME)
  --nbd-socket PATH       QEMU's NBD server socket, if it already runs one
  --seed-window MiB       seed: bytes per confirmed batch (default 64); an interrupted
                          seed resumes after the last confirmed one
  --once                  push: one cycle
  --cycles N              push: N cycles, then stop (default: until SIGTERM)
  --quiet                 seed, push: print nothing but errors
  --progress-interval S   seed, push: seconds between progress lines when stderr is not
                          a terminal (default 10)
  --log-file FILE         seed, push: also append timestamped progress and messages to FILE
  --json, --prometheus    status: output format
  --config FILE           daemon: JSON file, {"defaults": {...}, "disks": [{...}]}, keys
                          are the parameters below (snake_case) plus name, qmp, node,
                          nbd_socket, work_dir (each disk works in work_dir/NAME);
                          relative paths are taken from the file's directory;
                          see docs/replication-protocol.md §9
${
  flagHelp(["psk_file", "psk", "qmp", "node", ...CYCLE_PARAMS, "take_over"], "flag", {
    width: 23,
    help: {
      psk_file: "file holding the pre-shared key (chmod 600)",
      qmp: "QMP socket of the QEMU whose disk is replicated",
      node: "block node of the disk to replicate",
      state_dir: "seed, push, status: the sender's state (checkpoint, last confirmed cycle)",
      take_over: "seed, push: replicate a disk whose bitmaps belong to another state " +
        "directory: remove them and read the disk whole",
    },
  })
}
`;

/** The daemon's disk parameters but nbd_socket, which is --nbd-socket here. */
const SENDER_PARAMS = DISK_PARAMS.filter((p) => p !== "nbd_socket");

/** `dirtybit replicate`. */
export const replicateCommand: Command = {
  name: "replicate",
  summary: "continuous DR replication: receive, seed, push, daemon, status",
  async run(args: string[], hooks: CliHooks = {}): Promise<number> {
    const [sub, ...rest] = args;
    if (!sub || sub === "--help" || sub === "-h" || rest.includes("--help")) {
      console.log(HELP.trim());
      return sub ? 0 : 2;
    }
    switch (sub) {
      case "receive":
        return await receive(rest, hooks);
      case "seed":
      case "push":
        return await send(sub, rest);
      case "status":
        return await status(rest);
      case "daemon":
        return await daemon(rest);
      default:
        throw new UsageError(
          `replicate: unknown subcommand '${sub}': see 'dirtybit replicate --help'`,
        );
    }
  },
};

/** One line of progress on stderr. */
export function log(line: string): void {
  console.error(`dirtybit replicate: ${line}`);
}

/** The receiver's lines: it runs for months, so each line says when (ISO 8601). */
function receiverLog(line: string): void {
  console.error(`${new Date().toISOString()} dirtybit replicate: ${line}`);
}

/** A use case's messages, as lines on stderr. */
export const notify: Notify = (_kind, text) => log(text);

function pskOf(params: Params): Promise<string> {
  return loadPsk(params, "replicate: --psk-file is required");
}

function hostPort(text: string, flag: string, defaultPort: number): { host: string; port: number } {
  return parseHostPort(text, `replicate: --${flag}`, defaultPort);
}

/** A command's flags that are not parameters, by name. */
type OwnFlags = Record<string, string | boolean | string[] | undefined>;

/** The receiver of `--dr HOST:PORT`, else of `--dr-host` and `--dr-port`; undefined if neither. */
function drAddress(
  params: Params,
  extra: OwnFlags,
): { host: string; port: number } | undefined {
  const dr = extra.dr as string | undefined;
  if (dr) return hostPort(dr, "dr", params.dr_port ?? 10900);
  return params.dr_host ? { host: params.dr_host, port: params.dr_port ?? 10900 } : undefined;
}

async function receive(args: string[], hooks: CliHooks): Promise<number> {
  const { params } = parseParamFlags("replicate receive", args, {
    only: ["psk", "psk_file", "listen", "replica_dir", "replica_format"],
  });
  const dir = required("replicate receive", "replica-dir", params.replica_dir);
  const format = params.replica_format!;
  const { host, port } = hostPort(params.listen!, "listen", 10900);
  const psk = await pskOf(params);
  const { store, recovered } = await ReplicaStore.open(dir, {
    format,
    onPoint: hooks.onPoint,
  });
  for (const r of recovered) receiverLog(`${r.name}: ${r.action} the journal of cycle ${r.cycle}`);
  const stop = catchStopSignals({ releaseOnStop: true });
  const receiver = Receiver.start({ hostname: host, port, psk, store, log: receiverLog });
  receiverLog(`listening on ${host}:${receiver.port}, replicas in ${dir}`);
  await stop.stopped;
  receiverLog("stopping");
  await receiver.stop();
  return 0;
}

/** A sender command's disk, target and QMP connection, from its flags. */
export interface SenderSetup {
  disk: ReplicatedDisk;
  target: ReplicationTarget;
  qmp: QmpSocket;
  compressLevel: number;
  params: Params;
  extra: OwnFlags;
}

/**
 * Parses a sender command's flags (`--qmp --node --dr --psk-file --name
 * --state-dir ...`) and connects to QMP; `what` names the command in errors.
 */
export async function senderSetup(
  sub: string,
  args: string[],
  what = `replicate ${sub}`,
): Promise<SenderSetup> {
  const { params, extra } = parseParamFlags(what, args, {
    only: [
      ...SENDER_PARAMS,
      "name",
      "work_dir",
      ...(sub === "seed" || sub === "push" ? ["take_over" as const] : []),
    ],
    extra: {
      dr: { type: "string" },
      "nbd-socket": { type: "string", path: true },
      ...(sub === "push" ? { once: { type: "boolean" }, cycles: { type: "string" } } : {}),
      ...(sub === "seed" ? { "seed-window": { type: "string" } } : {}),
      ...(sub === "seed" || sub === "push" ? PROGRESS_FLAGS : {}),
    } satisfies FlagTable,
  });
  const qmpSocket = required(what, "qmp", params.qmp);
  if (params.node?.length !== 1) throw new UsageError(`${what}: give exactly one --node`);
  const address = drAddress(params, extra);
  if (!address) throw new UsageError(`${what}: --dr HOST:PORT is required`);
  const { host, port } = address;
  const psk = await pskOf(params);
  const node = params.node[0];
  const stateDir = cliReplicationStateDir(params.state_dir);
  if (params.name === undefined && !isReplicaName(node)) {
    throw new UsageError(`${what}: node '${node}' is no replica name: give --name NAME`);
  }
  const name = replicaName(what, params.name ?? node);
  const workDir = params.work_dir ?? senderWorkDir(stateDir, name);
  await makeDirectory(workDir, "the work directory");
  const compressLevel = compressLevelOf(params.compress, what);
  const retry = retryPolicyOf(params);
  const qmp = await QmpSocket.connect(qmpSocket);
  return {
    disk: {
      qmp,
      node,
      name,
      stateDir,
      workDir,
      nbdSocket: extra["nbd-socket"] as string | undefined,
    },
    target: { host, port, psk, bandwidthBytesPerSecond: params.bandwidth_limit, retry },
    qmp,
    compressLevel,
    params,
    extra,
  };
}

/** A `--name`: it becomes file names, so no `/` or `..`. */
export function replicaName(what: string, name: string): string {
  if (!isReplicaName(name)) {
    throw new UsageError(`${what}: --name '${name}' must be ${REPLICA_NAME_RULE}`);
  }
  return name;
}

/** Refuses a directory that is not there: a typo must not look like "nothing replicated". */
async function existingDirectory(what: string, flag: string, dir: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(dir);
  } catch (err) {
    throw fileSystemError(err, `${what}: ${flag}`, dir);
  }
  if (!info.isDirectory) throw new UsageError(`${what}: ${flag} ${dir} is not a directory`);
}

/** `replicate daemon --config FILE`: every disk of the file on its own schedule. */
async function daemon(args: string[]): Promise<number> {
  const { extra } = parseParamFlags("replicate daemon", args, {
    only: [],
    extra: { config: { type: "string", path: true } },
  });
  const path = required("replicate daemon", "config", extra.config as string | undefined);
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw new UsageError(`config ${path} cannot be read: ${(err as Error).message.split("\n")[0]}`);
  }
  const scheduled: ScheduledDisk[] = [];
  for (const c of parseDaemonConfig(text, path)) {
    const p = c.params;
    const stateDir = cliReplicationStateDir(p.state_dir);
    const workDir = senderWorkDir(stateDir, c.name, c.workDir);
    await makeDirectory(workDir, "the work directory");
    scheduled.push({
      qmpPath: p.qmp,
      disk: { node: p.node[0], name: c.name, stateDir, workDir, nbdSocket: p.nbd_socket },
      target: {
        host: p.dr_host,
        port: p.dr_port ?? 10900,
        psk: await pskOf(p),
        bandwidthBytesPerSecond: p.bandwidth_limit,
        retry: retryPolicyOf(p),
      },
      intervalMs: (p.cycle_interval ?? 300) * 1000,
      options: { log, compressLevel: compressLevelOf(p.compress, `config ${path}: ${c.name}`) },
    });
  }
  const stop = catchStopSignals({ releaseOnStop: true });
  log(`daemon: ${scheduled.length} disks: ${scheduled.map((d) => d.disk.name).join(", ")}`);
  await runDaemon(scheduled, stop.signal, log, (qmp) => QmpSocket.connect(qmp));
  log("daemon stopped");
  return 0;
}

async function send(sub: "seed" | "push", args: string[]): Promise<number> {
  const setup = await senderSetup(sub, args);
  try {
    return await sendWith(sub, setup);
  } finally {
    await setup.qmp.close();
  }
}

async function sendWith(sub: "seed" | "push", setup: SenderSetup): Promise<number> {
  const { disk, target, params, extra } = setup;
  const window = extra["seed-window"] === undefined ? 64 : Number(extra["seed-window"]);
  if (!Number.isInteger(window) || window < 1 || window > 1 << 20) {
    throw new UsageError(`replicate seed: --seed-window must be a whole number of MiB >= 1`);
  }
  const cycles = extra.once ? 1 : extra.cycles === undefined ? Infinity : Number(extra.cycles);
  if (!(cycles >= 1) || (cycles !== Infinity && !Number.isInteger(cycles))) {
    throw new UsageError(`replicate push: --cycles must be a positive integer`);
  }
  const progress = await Progress.start(`replicate ${sub}`, {
    quiet: extra.quiet === true,
    "progress-interval": extra["progress-interval"] as string | undefined,
    "log-file": extra["log-file"] as string | undefined,
  });
  // The use case's messages: on stderr as ever (unless --quiet), and in the log file.
  const say: Notify = (_kind, text) => progress.say(text, `dirtybit replicate: ${text}`);
  // A new cycle starts from 0 again: its own live line (the total line sums them).
  let item = 0;
  let last = Infinity;
  const options: SendOptions = {
    compressLevel: setup.compressLevel,
    takeOver: params.take_over === true,
    seedWindowBytes: window << 20,
    onProgress: (done, total) => {
      if (done < last) item++;
      last = done;
      progress.update(item > 1 ? `${disk.name} #${item}` : disk.name, done, total);
    },
  };
  const finish = (
    level: string,
    s: { dirtyBytes: number; payloadBytes: number; wireBytes: number },
  ) =>
    progress.finish({
      what: `replicate ${sub} of ${disk.name}`,
      level,
      read: s.dirtyBytes,
      stored: s.payloadBytes,
      streamBytes: s.wireBytes,
      seconds: (Date.now() - progress.startedAt) / 1000,
    });
  if (target.bandwidthBytesPerSecond) {
    say("progress", `bandwidth limit ${describeRate(target.bandwidthBytesPerSecond)}`);
  }
  // SIGTERM ends a push after its current cycle; a seed resumes where it was killed.
  const stop = sub === "push" ? catchStopSignals({ releaseOnStop: true }) : undefined;
  try {
    if (sub === "seed") {
      finish("seed", (await seedOnce({ disk, target, options, notify: say })).stats);
      return 0;
    }
    const r = await pushCycles({
      disk,
      target,
      options,
      notify: say,
      cycles,
      intervalMs: (params.cycle_interval ?? 300) * 1000,
      signal: stop!.signal,
    });
    finish(`${r.confirmed} cycle${r.confirmed === 1 ? "" : "s"}`, r.stats);
    return r.failed ? 1 : 0;
  } catch (err) {
    progress.fail(err);
    throw err;
  } finally {
    stop?.close();
  }
}

async function status(args: string[]): Promise<number> {
  const { params, extra } = parseParamFlags("replicate status", args, {
    only: ["state_dir", "psk", "psk_file", "dr_host", "dr_port"],
    extra: { dr: { type: "string" }, json: { type: "boolean" }, prometheus: { type: "boolean" } },
  });
  const remote = drAddress(params, extra);
  const stateDir = cliReplicationStateDir(params.state_dir);
  if (!remote) await existingDirectory("replicate status", "--state-dir", stateDir);
  const rows = await replicationStatus(
    remote ? { ...remote, psk: await pskOf(params) } : { stateDir },
  );
  if (extra.json) console.log(JSON.stringify(rows, null, 2));
  else if (extra.prometheus) await Deno.stdout.write(new TextEncoder().encode(toPrometheus(rows)));
  else await Deno.stdout.write(new TextEncoder().encode(toText(rows)));
  return 0;
}
