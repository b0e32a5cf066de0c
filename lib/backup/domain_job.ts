/**
 * Backup of a libvirt domain named by its name or UUID, on libvirt's own
 * checkpoints (lib/backup/domain_plan.ts), running or shut off.
 *
 * - Running (or paused): one pull-mode backup job (`backup-begin`) gives every
 *   selected disk one point in time and creates the new checkpoint with it;
 *   libvirt exports each disk's view, with the changes since the disk's
 *   checkpoint as a dirty bitmap, on a unix socket in a scratch directory
 *   under `--scratch-dir`, and keeps the fleecing (scratch) files there. The
 *   job is ended with `domjobabort` (how a pull backup ends). A backup that
 *   fails deletes the checkpoint it created (libvirt merges its bitmap back
 *   into its parent), so the disk's last checkpoint still has every change.
 * - Shut off: each image is read through a read-only `qemu-nbd`, with the
 *   bitmap of the disk's checkpoint. qemu-nbd holds the image's lock, so the
 *   domain cannot start while it reads. Once every stream is written the new
 *   checkpoint's bitmaps are added to the images (`qemu-img bitmap --add`)
 *   and the checkpoint is made known to libvirt (`checkpoint-create
 *   --redefine`), so the next backup of the running domain goes on from it.
 *
 * Disks are named by their target (`vda`): stable across restarts. The state
 * of a domain lives in `STATE_DIR/libvirt-UUID/` (one state directory can hold
 * all domains of a host). Every stream carries the persistent domain XML
 * (`metadata.libvirt.xml`) for `restore --define`.
 *
 * @module
 */
import { join } from "node:path";
import { SourceError, UsageError, wrapError } from "../core/errors.ts";
import type { BackupLevel } from "../core/level.ts";
import { type DomainDisk, parseDomainDisks } from "../hosts/libvirt.ts";
import {
  type HostShell,
  LocalShell,
  makeQemuDir,
  removeHostDir,
  SYSTEM_URI,
  VirshDomain,
  writeHostFile,
} from "../hosts/virsh.ts";
import {
  backupSocket,
  backupXml,
  type CheckpointInfo,
  checkpointXml,
  parseBackupExports,
} from "../hosts/libvirt_xml.ts";
import { type ServedImage, serveImage } from "../qemu/qemu_nbd.ts";
import { SshHost, type SshTarget } from "../hosts/ssh.ts";
import { tunnelDataPath } from "./access_ssh_tunnel.ts";
import type { DiskCheckpoint } from "../qemu/checkpoint.ts";
import type { PointInTime, PointInTimeDisk } from "../qemu/pointintime.ts";
import {
  type BackupJob,
  type DiskEstimate,
  type OpenRequest,
  type PointInTimeOpener,
  runPointInTimeJob,
  type SinkFactory,
} from "./engine.ts";
import type { DiskBackupResult } from "./plan.ts";
import { type DiskState, loadAllDiskStates, loadDiskState } from "../model/disk_state.ts";
import {
  checkpointName,
  type DomainDiskPlan,
  type ImageDisk,
  planDomainDisks,
  selectDomainDisks,
  staleCheckpoints,
} from "./domain_plan.ts";

/** A libvirt domain and the disks of it to back up. */
export interface DomainSource {
  /** Name or UUID. */
  domain: string;
  /** libvirt URI (default qemu:///system). */
  connect?: string;
  /** Disks to back up (targets such as vda, or image paths); default all. */
  disks?: string[];
  /** Disks to leave out. */
  excludeDisks?: string[];
  /** Where libvirt puts a running domain's scratch files and NBD socket (on its host). */
  scratchDir?: string;
  /** For a `qemu+ssh://` URI: the key and known_hosts (host, port and user come from the URI). */
  ssh?: Omit<SshTarget, "host" | "port" | "user" | "warn">;
}

/** The engine settings of a domain job. */
export type DomainJobSettings = Pick<
  BackupJob,
  "level" | "stateDir" | "compression" | "metadata" | "signal" | "onMessage" | "onProgress"
>;

/** Default parent of the scratch directories: where libvirt keeps QEMU's own files. */
export const DEFAULT_SCRATCH_DIR = "/var/lib/libvirt/qemu/dirtybit";

/**
 * The stream block size of a domain's disks: libvirt gives its bitmaps
 * QEMU's default granularity (the image's cluster size, 64 KiB by default);
 * dirty ranges of another granularity are aligned to it, which is still exact.
 */
const BLOCK_SIZE = 65536;

/** The state directory of one domain inside the one given. */
export function domainStateDir(stateDir: string, uuid: string): string {
  return join(stateDir, `libvirt-${uuid}`);
}

/**
 * Where `uri` leads: this machine's libvirt, or (`qemu+ssh://[user@]host[:port]/system`)
 * the system libvirt of a host reached over SSH, where virsh then runs.
 */
export function parseConnectUri(
  uri: string,
): { local: true; uri: string } | {
  local: false;
  uri: string;
  host: string;
  port?: number;
  user?: string;
} {
  if (/^qemu:\/\/\/(system|session)$/.test(uri)) return { local: true, uri };
  const m = /^qemu\+ssh:\/\/(?:([^@/]+)@)?([^:/]+|\[[^\]]+\])(?::(\d+))?\/(system|session)$/.exec(
    uri,
  );
  if (!m) {
    throw new UsageError((p) =>
      `${p("connect")} ${uri}: give qemu:///system, qemu:///session or ` +
      "qemu+ssh://[user@]host[:port]/system"
    );
  }
  return {
    local: false,
    uri: `qemu:///${m[4]}`,
    host: m[2].replace(/^\[|\]$/g, ""),
    ...(m[3] ? { port: Number(m[3]) } : {}),
    ...(m[1] ? { user: decodeURIComponent(m[1]) } : {}),
  };
}

/**
 * Runs `fn` on the domain opened (its state, disks and what a job of it
 * needs), on this machine or through SSH to its host.
 */
async function withDomain<T>(
  source: DomainSource,
  settings: DomainJobSettings,
  fn: (open: OpenDomain) => Promise<T>,
): Promise<T> {
  const where = parseConnectUri(source.connect ?? SYSTEM_URI);
  if (where.local) return await fn(await openDomain(source, settings, new LocalShell(), where.uri));
  if (!source.ssh) {
    throw new UsageError((p) =>
      `${p("connect")} ${source.connect}: needs an SSH key (${p("ssh_key")})`
    );
  }
  const host = await SshHost.connect({
    ...source.ssh,
    host: where.host,
    port: where.port,
    user: where.user,
    warn: (text: string) => settings.onMessage?.("warning", text),
  });
  try {
    return await fn(await openDomain(source, settings, host, where.uri, host));
  } finally {
    await host.close();
  }
}

interface OpenDomain {
  ctx: DomainContext;
  live: boolean;
  xml: string;
}

async function openDomain(
  source: DomainSource,
  settings: DomainJobSettings,
  shell: HostShell,
  uri: string,
  remote?: SshHost,
): Promise<OpenDomain> {
  const domain = await VirshDomain.open(shell, uri, source.domain);
  const runState = await domain.state();
  const live = runState === "running" || runState === "paused";
  if (!live && runState !== "shut off") {
    throw new SourceError(
      `domain ${domain.name} is ${runState}: back it up running or shut off`,
    );
  }
  if (!live && remote) {
    throw new SourceError(
      `domain ${domain.name} on ${remote.target.host} is shut off: shut-off domains are backed up ` +
        "by dirtybit on their own host (qemu:///system)",
    );
  }
  const xml = await domain.dumpXml();
  const allDisks = parseDomainDisks(xml);
  const ctx: DomainContext = {
    shell,
    local: !remote,
    remote,
    domain,
    allDisks,
    selected: selectDomainDisks(domain.name, allDisks, source.disks, source.excludeDisks),
    stateDir: domainStateDir(settings.stateDir, domain.uuid),
    level: settings.level === "auto" ? "incremental" : settings.level,
    scratchDir: source.scratchDir ?? DEFAULT_SCRATCH_DIR,
    warn: (text) => settings.onMessage?.("warning", text),
  };
  return { ctx, live, xml };
}

/**
 * Backs up the domain's selected disks (see the module doc). Resolves only
 * once every stream was written and the new checkpoint accepted.
 */
export function runDomainBackup(
  source: DomainSource,
  settings: DomainJobSettings,
  sinkFor: SinkFactory,
): Promise<DiskBackupResult[]> {
  return withDomain(source, settings, async ({ ctx, live, xml }) => {
    const { domain } = ctx;
    const tunnel = ctx.remote ? tunnelDataPath(ctx.remote) : undefined;
    const job = {
      ...settings,
      ...tunnel?.job,
      stateDir: ctx.stateDir,
      metadata: {
        ...settings.metadata,
        libvirt: {
          domain: domain.name,
          uuid: domain.uuid,
          xml: live ? await domain.dumpXml(true) : xml,
        },
      },
    };
    const disks = ctx.selected.map((d) => ({ node: d.target, name: d.target }));
    try {
      const opener = live ? liveOpener(ctx) : offlineOpener(ctx);
      return await runPointInTimeJob(job, disks, opener, sinkFor);
    } finally {
      await tunnel?.close();
    }
  });
}

/**
 * What a backup of the domain would read: the level each disk would get and,
 * as an upper bound, its virtual size (libvirt tells a bitmap's dirty size
 * only for a running domain). Changes nothing.
 */
export function estimateDomainBackup(
  source: DomainSource,
  settings: DomainJobSettings,
): Promise<DiskEstimate[]> {
  return withDomain(source, settings, async ({ ctx }) => {
    const sizes = await Promise.all(ctx.selected.map((d) => ctx.domain.capacity(d.target)));
    const states = await Promise.all(
      ctx.selected.map((d) => loadDiskState(ctx.stateDir, d.target)),
    );
    const plans = planDomainDisks({
      disks: ctx.selected,
      states,
      sizes,
      checkpoints: await ctx.domain.checkpoints(),
      requested: ctx.level,
    });
    return plans.map((p, i) => ({
      diskName: p.target,
      level: p.level,
      ...(p.reason ? { reason: p.reason } : {}),
      bytes: sizes[i],
      lastBackupId: states[i]?.lastBackupId ?? null,
      lastFullId: states[i]?.lastFullId ?? null,
    }));
  });
}

interface DomainContext {
  shell: HostShell;
  /** The domain's host is this machine. */
  local: boolean;
  /** The SSH connection to the domain's host, if it is another one. */
  remote?: SshHost;
  domain: VirshDomain;
  allDisks: DomainDisk[];
  selected: ImageDisk[];
  stateDir: string;
  level: BackupLevel;
  scratchDir: string;
  warn: (text: string) => void;
}

/** What both openers share: sizes, checkpoints (stale ones removed) and the plan. */
async function plan(
  ctx: DomainContext,
  req: OpenRequest,
  removeCheckpoint: (cp: CheckpointInfo) => Promise<void>,
  imageBitmaps?: Set<string>[],
) {
  const sizes = await Promise.all(ctx.selected.map((d) => ctx.domain.capacity(d.target)));
  let checkpoints = await ctx.domain.checkpoints();
  // Checkpoints of attempts that failed or died, of chains that ended: no one needs them.
  const stale = new Set(
    staleCheckpoints(checkpoints.map((c) => c.name), await loadAllDiskStates(ctx.stateDir)),
  );
  for (const cp of checkpoints) if (stale.has(cp.name)) await removeCheckpoint(cp);
  checkpoints = checkpoints.filter((c) => !stale.has(c.name));
  const plans = planDomainDisks({
    disks: ctx.selected,
    states: req.states,
    sizes,
    checkpoints,
    requested: ctx.level,
    imageBitmaps,
  });
  return { sizes, checkpoints, plans, name: checkpointName(req.backupId) };
}

/** The checkpoints to persist per disk once the backup is accepted. */
function nextCheckpoints(
  plans: DomainDiskPlan[],
  states: (DiskState | null)[],
  name: string,
): DiskCheckpoint[] {
  return plans.map((p, i) => ({
    node: p.target,
    incBitmap: name,
    baseBitmap: p.level === "full" ? name : states[i]!.checkpoint.baseBitmap,
  }));
}

/**
 * After the commit: the checkpoints no chain needs now, given that the
 * selected disks' chains go on from `name` (a full drops its disk's old chain).
 */
async function unneededAfter(
  ctx: DomainContext,
  plans: DomainDiskPlan[],
  states: (DiskState | null)[],
  names: string[],
  name: string,
): Promise<string[]> {
  const targets = new Set(ctx.selected.map((d) => d.target));
  const others = (await loadAllDiskStates(ctx.stateDir)).filter((s) => !targets.has(s.diskName));
  const going = states.filter((s, i): s is DiskState => s !== null && plans[i].level !== "full");
  return staleCheckpoints(names, [...others, ...going], [name]);
}

function pitDisk(
  disk: ImageDisk,
  plan: DomainDiskPlan,
  size: number,
  uri: string,
  exportName: string,
  bitmap: string | undefined,
): PointInTimeDisk {
  if (plan.since && !bitmap) {
    throw new SourceError(`the backup of ${disk.target} exports no dirty bitmap for ${plan.since}`);
  }
  return {
    node: disk.target,
    exportName,
    uri,
    level: plan.level,
    ...(plan.reason ? { reason: plan.reason } : {}),
    ...(plan.since ? { dirtyContext: `qemu:dirty-bitmap:${bitmap}` } : {}),
    size,
    granularity: BLOCK_SIZE,
  };
}

/** A scratch directory dirtybit made: `dirtybit-` and 8 hex digits. */
const SCRATCH_NAME = /^dirtybit-[0-9a-f]{8}$/;

function liveOpener(ctx: DomainContext): PointInTimeOpener {
  const { domain } = ctx;
  return {
    async open(req) {
      await endLeftoverJob(ctx);
      const { sizes, plans, name } = await plan(
        ctx,
        req,
        (cp) => domain.deleteCheckpoint(cp.name),
      );
      const scratch = join(ctx.scratchDir, `dirtybit-${crypto.randomUUID().slice(0, 8)}`);
      // The next run removes it if this one is killed (on this machine; a remote
      // host keeps an empty directory).
      if (ctx.local) await req.run.add({ kind: "path", path: scratch });
      await makeQemuDir(
        ctx.shell,
        ctx.scratchDir,
        scratch,
        domain.name,
        ctx.scratchDir === DEFAULT_SCRATCH_DIR,
      );
      const socket = join(scratch, "nbd.sock");
      const byTarget = new Map(plans.map((p) => [p.target, p]));
      const modes = ctx.allDisks.filter((d) => d.source !== undefined).map((d) => {
        const p = byTarget.get(d.target);
        const scratchFile = join(scratch, `${d.target}.qcow2`);
        if (!p) return { target: d.target, mode: "no" as const };
        return p.since
          ? { target: d.target, mode: "incremental" as const, since: p.since, scratch: scratchFile }
          : { target: d.target, mode: "full" as const, scratch: scratchFile };
      });
      const withBitmap = plans.filter((p) => p.bitmap).map((p) => p.target);
      const backupFile = join(scratch, "backup.xml");
      await writeHostFile(ctx.shell, backupFile, backupXml(socket, modes));
      let checkpointFile: string | undefined;
      if (withBitmap.length > 0) {
        checkpointFile = join(scratch, "checkpoint.xml");
        await writeHostFile(
          ctx.shell,
          checkpointFile,
          checkpointXml({
            name,
            bitmapDisks: withBitmap,
            allDisks: modes.map((m) => m.target),
          }),
        );
      }
      let begun = false;
      const end = async (outcome: "commit" | "abort") => {
        const errors: unknown[] = [];
        if (begun) await domain.abortJob().catch((e) => errors.push(e));
        if (outcome === "abort" && begun && checkpointFile) {
          await domain.deleteCheckpoint(name).catch((e) => errors.push(e));
        }
        await removeHostDir(ctx.shell, scratch);
        if (errors.length) throw errors[0];
      };
      try {
        await domain.backupBegin(backupFile, checkpointFile).catch((err) => {
          if (!/Permission denied/.test(err.message)) throw err;
          throw wrapError(
            err,
            SourceError,
            (p) =>
              `${err.message}; QEMU must be able to reach ${p("scratch_dir")} ${ctx.scratchDir}`,
          );
        });
        begun = true;
        const exports = parseBackupExports((await domain.backupXml()) ?? "");
        const disks = ctx.selected.map((d, i) => {
          const exp = exports.get(d.target);
          if (!exp) {
            throw new SourceError(`the backup job of ${domain.name} exports no ${d.target}`);
          }
          const uri = `nbd+unix:///${encodeURIComponent(exp.exportName)}?socket=${socket}`;
          return pitDisk(d, plans[i], sizes[i], uri, exp.exportName, exp.exportBitmap);
        });
        let ended = false;
        const pit: PointInTime = {
          disks,
          async commit() {
            ended = true;
            await end("commit");
            const names = (await domain.checkpoints()).map((c) => c.name);
            for (const stale of await unneededAfter(ctx, plans, req.states, names, name)) {
              await domain.deleteCheckpoint(stale);
            }
            return nextCheckpoints(plans, req.states, name);
          },
          async abort() {
            if (ended) return;
            ended = true;
            await end("abort");
          },
        };
        return pit;
      } catch (err) {
        await end("abort").catch(() => {});
        throw err;
      }
    },
  };
}

/**
 * A backup job that a killed dirtybit left running (its socket in a dirtybit
 * scratch directory) is ended; any other backup job is someone else's: refused.
 */
async function endLeftoverJob(ctx: DomainContext): Promise<void> {
  const xml = await ctx.domain.backupXml();
  if (xml === undefined) return;
  const socket = backupSocket(xml);
  const dir = socket ? socket.split("/").slice(-2, -1)[0] : "";
  if (!SCRATCH_NAME.test(dir)) {
    throw new SourceError(
      `domain ${ctx.domain.name} already runs a backup job that is not dirtybit's; ` +
        `wait for it to end (virsh domjobinfo ${ctx.domain.name})`,
    );
  }
  ctx.warn(`ended the backup job of ${ctx.domain.name} that an earlier dirtybit run left`);
  await ctx.domain.abortJob();
}

function offlineOpener(ctx: DomainContext): PointInTimeOpener {
  const { domain } = ctx;
  const servers: ServedImage[] = [];
  const closeServers = async () => {
    for (const s of servers.splice(0)) await s.close().catch(() => {});
  };
  const qcow2 = ctx.allDisks.filter((d): d is ImageDisk =>
    d.source !== undefined && d.device === "disk" && d.format === "qcow2" && d.type === "file"
  );
  return {
    async open(req) {
      const bitmapsOf = await Promise.all(ctx.selected.map((d) => imageBitmaps(d)));
      const { sizes, checkpoints, plans, name } = await plan(
        ctx,
        req,
        (cp) => removeOfflineCheckpoint(ctx, qcow2, cp.name),
        bitmapsOf,
      );
      try {
        const disks: PointInTimeDisk[] = [];
        for (const [i, d] of ctx.selected.entries()) {
          const served = await serveImage(d.source, {
            format: d.format ?? "raw",
            readOnly: true,
            bitmap: plans[i].since,
            exportName: d.target,
          }).catch((err) => {
            throw wrapError(
              err,
              SourceError,
              `cannot read ${d.source} of shut-off domain ${domain.name} (did it start?): ${err.message}`,
            );
          });
          servers.push(served);
          disks.push(pitDisk(d, plans[i], sizes[i], served.uri, d.target, plans[i].since));
        }
        // The images are locked now: a domain that started before cannot be read consistently.
        const now = await domain.state();
        if (now !== "shut off") {
          throw new SourceError(
            `domain ${domain.name} started during the backup (${now}); run it again`,
          );
        }
        let ended = false;
        const pit: PointInTime = {
          disks,
          async commit() {
            ended = true;
            await closeServers();
            const withBitmap = ctx.selected.filter((_, i) => plans[i].bitmap);
            for (const d of withBitmap) await qemuImg(["bitmap", "--add", d.source, name]);
            const parent = checkpoints.reduce<CheckpointInfo | undefined>(
              (a, c) => (!a || (c.creationTime ?? 0) >= (a.creationTime ?? 0) ? c : a),
              undefined,
            );
            if (withBitmap.length > 0) {
              const file = join(req.localDir, "checkpoint.xml");
              await Deno.writeTextFile(
                file,
                checkpointXml({
                  name,
                  bitmapDisks: withBitmap.map((d) => d.target),
                  allDisks: ctx.allDisks.filter((d) => d.source !== undefined).map((d) => d.target),
                  redefine: { parent: parent?.name, creationTime: Math.floor(Date.now() / 1000) },
                }),
              );
              await domain.redefineCheckpoint(file);
            }
            const names = [...checkpoints.map((c) => c.name), name];
            for (const stale of await unneededAfter(ctx, plans, req.states, names, name)) {
              await removeOfflineCheckpoint(ctx, qcow2, stale);
            }
            return nextCheckpoints(plans, req.states, name);
          },
          async abort() {
            if (ended) return;
            ended = true;
            await closeServers();
          },
        };
        return pit;
      } catch (err) {
        await closeServers();
        throw err;
      }
    },
    close: closeServers,
  };
}

/** A shut-off domain's checkpoint: its bitmaps out of the images, then libvirt's metadata. */
async function removeOfflineCheckpoint(
  ctx: DomainContext,
  images: ImageDisk[],
  name: string,
): Promise<void> {
  for (const d of images) {
    if ((await imageBitmaps(d)).has(name)) await qemuImg(["bitmap", "--remove", d.source, name]);
  }
  await ctx.domain.deleteCheckpoint(name, true);
}

/** The persistent bitmaps of a (not running) disk image. */
async function imageBitmaps(disk: ImageDisk): Promise<Set<string>> {
  if (disk.format !== "qcow2") return new Set();
  const info = JSON.parse(await qemuImg(["info", "--output=json", disk.source])) as {
    "format-specific"?: { data?: { bitmaps?: { name: string }[] } };
  };
  return new Set((info["format-specific"]?.data?.bitmaps ?? []).map((b) => b.name));
}

async function qemuImg(args: string[]): Promise<string> {
  const r = await new LocalShell().run(["qemu-img", ...args]);
  if (r.code !== 0) {
    throw new SourceError(
      `qemu-img ${args[0]} ${args.at(-2) ?? ""} failed: ${r.stderr.trim().split("\n").pop()}`,
    );
  }
  return r.stdout;
}
