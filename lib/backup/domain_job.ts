/**
 * Backup of a libvirt domain named by its name or UUID, on libvirt's own
 * checkpoints (lib/backup/domain_plan.ts), running or shut off.
 *
 * - Running (or paused): one pull-mode backup job (`backup-begin`) gives every
 *   selected disk one point in time and creates the new checkpoint with it;
 *   libvirt exports each disk's view, with the changes since the disk's
 *   checkpoint as a dirty bitmap, on a unix socket in a scratch directory
 *   under `--scratch-dir` (or where the VM's access mode serves them,
 *   lib/backup/access_mode.ts), and keeps the fleecing (scratch) files there. The
 *   job is ended with `domjobabort` (how a pull backup ends). A backup that
 *   fails deletes the checkpoint it created (libvirt merges its bitmap back
 *   into its parent), so the disk's last checkpoint still has every change.
 * - Shut off: each image is read through a read-only `qemu-nbd` (on the
 *   domain's host: over SSH for `qemu+ssh://`, the data through the tunnel),
 *   with the bitmap of the disk's checkpoint. qemu-nbd holds the image's
 *   lock, so the domain cannot start while it reads. Once every stream is
 *   written the new checkpoint's bitmaps are added to the images (`qemu-img
 *   bitmap --add`) and the checkpoint is made known to libvirt
 *   (`checkpoint-create --redefine`), so the next backup of the running
 *   domain goes on from it.
 * - No domain at all (a stopped CloudStack VM: CloudStack undefines it): the
 *   volumes' images are read the same way, and their `dirtybit-` bitmaps
 *   alone are the checkpoints. A running domain that does not know the
 *   checkpoints its disks' bitmaps stand for (defined afresh) is told of
 *   them again ({@link adoptCheckpoints}).
 *
 * The CloudStack `--vm` path (lib/backup/vm_job.ts) runs the same job
 * ({@link runDomainJob}) on the VM's domain on its KVM host.
 *
 * Disks are named by their target (`vda`): stable across restarts. The state
 * of a domain lives in `STATE_DIR/libvirt-UUID/` (one state directory can hold
 * all domains of a host). Every stream carries the persistent domain XML
 * (`metadata.libvirt.xml`) for `restore --define`.
 *
 * @module
 */
import { basename, dirname, join } from "node:path";
import { ChainError, SourceError, UsageError, wrapError } from "../core/errors.ts";
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
  backupPaths,
  backupXml,
  type CheckpointInfo,
  checkpointXml,
  exportBitmapName,
} from "../hosts/libvirt_xml.ts";
import { type ServedImage, serveImage, serveImageOnHost } from "../qemu/qemu_nbd.ts";
import { SshHost, type SshTarget } from "../hosts/ssh.ts";
import { socketExports } from "./access_ssh_tunnel.ts";
import type { ExportAccess } from "./access_mode.ts";
import type { DiskCheckpoint } from "../qemu/checkpoint.ts";
import type { PointInTime, PointInTimeDisk } from "../qemu/pointintime.ts";
import {
  type DiskEstimate,
  type OpenRequest,
  type PointInTimeOpener,
  runPointInTimeJob,
  type SinkFactory,
  type SourceJobSettings,
} from "./engine.ts";
import type { DiskBackupResult } from "./plan.ts";
import { type DiskState, loadAllDiskStates, loadDiskState, ownerId } from "../model/disk_state.ts";
import {
  CHECKPOINT_PREFIX,
  checkpointName,
  type DomainDiskPlan,
  foreignCheckpoints,
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
 * Runs `fn` on the domain opened as a job target (its state, disks and what
 * a job of it needs), on this machine or through SSH to its host.
 */
async function withDomain<T>(
  source: DomainSource,
  settings: SourceJobSettings,
  fn: (target: DomainJobTarget) => Promise<T>,
): Promise<T> {
  const where = parseConnectUri(source.connect ?? SYSTEM_URI);
  if (where.local) {
    return await withOpenDomain(source, settings, { shell: new LocalShell() }, where.uri, fn);
  }
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
    return await withOpenDomain(source, settings, { shell: host, remote: host }, where.uri, fn);
  } finally {
    await host.close();
  }
}

/** Runs `fn` on the domain, its virsh session open meanwhile. */
async function withOpenDomain<T>(
  source: DomainSource,
  settings: SourceJobSettings,
  host: DomainHost,
  uri: string,
  fn: (target: DomainJobTarget) => Promise<T>,
): Promise<T> {
  const domain = await VirshDomain.open(host.shell, uri, source.domain, { session: true });
  try {
    return await fn(jobTarget(source, settings, host, domain));
  } finally {
    await domain.close();
  }
}

function jobTarget(
  source: DomainSource,
  settings: SourceJobSettings,
  host: DomainHost,
  domain: VirshDomain,
): DomainJobTarget {
  const { live, xml, persistentXml } = domainFacts(domain);
  const allDisks = parseDomainDisks(xml);
  const selected = selectDomainDisks(domain.name, allDisks, source.disks, source.excludeDisks);
  return {
    host,
    domain,
    persistentXml,
    label: domain.name,
    live,
    allDisks,
    selected,
    names: selected.map((d) => d.target),
    stateDir: domainStateDir(settings.stateDir, domain.uuid),
    scratchDir: source.scratchDir,
  };
}

/**
 * Whether the domain runs (running or paused) and its disks' definition
 * (the live one while it runs), as libvirt showed them when it was opened;
 * refused in any other state.
 */
export function domainFacts(
  domain: VirshDomain,
): { live: boolean; xml: string; persistentXml: string } {
  // Read when it was opened: over SSH each command is a round trip.
  const { state: runState, xml, persistentXml } = domain.opened;
  const live = runState === "running" || runState === "paused";
  if (!live && runState !== "shut off") {
    throw new SourceError(`domain ${domain.name} is ${runState}: back it up running or shut off`);
  }
  return { live, xml, persistentXml };
}

/** Where a domain's host commands run: this machine, or a host over SSH (`remote`). */
export interface DomainHost {
  shell: HostShell;
  remote?: SshHost;
}

/** What a domain job backs up, and how (see {@link runDomainJob}). */
export interface DomainJobTarget {
  host: DomainHost;
  /**
   * The libvirt domain. Undefined: no domain is defined (a stopped CloudStack
   * VM, whose volumes lie on primary storage): then the images' own bitmaps
   * are the checkpoints.
   */
  domain?: VirshDomain;
  /** The domain's persistent definition (what every stream carries), with a domain. */
  persistentXml?: string;
  /** For messages: the domain's (or the VM's instance) name. */
  label: string;
  /** The domain runs: a pull backup; else the images are read offline. */
  live: boolean;
  /** Every disk of the domain (the backup and checkpoint XML list each one). */
  allDisks: DomainDisk[];
  selected: ImageDisk[];
  /** The name of each selected disk in the state directory and its streams. */
  names: string[];
  stateDir: string;
  /** Parent of a running domain's scratch directories (default {@link DEFAULT_SCRATCH_DIR}). */
  scratchDir?: string;
  /**
   * Where a running domain's pull backup serves its exports and how they are
   * read: the VM's access mode's; default a unix socket in the scratch
   * directory (through the SSH tunnel for a remote host).
   */
  exports?: ExportAccess;
  /** Freezes the guest around the start of a running domain's backup. */
  quiesce?: { freeze(): Promise<void>; thaw(): Promise<void> };
}

/**
 * Backs up the domain's selected disks (see the module doc). Resolves only
 * once every stream was written and the new checkpoint accepted.
 */
export function runDomainBackup(
  source: DomainSource,
  settings: SourceJobSettings,
  sinkFor: SinkFactory,
): Promise<DiskBackupResult[]> {
  return withDomain(source, settings, (target) => runDomainJob(target, settings, sinkFor));
}

/**
 * What a backup of the domain would read: the level each disk would get and,
 * as an upper bound, its virtual size (libvirt tells a bitmap's dirty size
 * only for a running domain). Changes nothing.
 */
export function estimateDomainBackup(
  source: DomainSource,
  settings: SourceJobSettings,
): Promise<DiskEstimate[]> {
  return withDomain(source, settings, (target) => estimateDomainJob(target, settings));
}

/**
 * One job on a domain's disks: a pull backup of a running domain, or the
 * images of a shut-off one (or of a stopped VM without a domain) read
 * offline. Every stream carries the domain's persistent XML when there is a
 * domain.
 */
export async function runDomainJob(
  target: DomainJobTarget,
  settings: SourceJobSettings,
  sinkFor: SinkFactory,
): Promise<DiskBackupResult[]> {
  const ctx = context(target, settings);
  const { domain } = target;
  const path = ctx.access.dataPath(target.host.remote);
  const job = {
    ...settings,
    ...path.job,
    stateDir: target.stateDir,
    metadata: {
      ...settings.metadata,
      ...(domain
        ? {
          libvirt: {
            domain: domain.name,
            uuid: domain.uuid,
            xml: target.persistentXml ?? await domain.dumpXml(true),
          },
        }
        : {}),
    },
  };
  const disks = target.selected.map((d, i) => ({ node: d.target, name: target.names[i] }));
  try {
    const opener = target.live ? liveOpener(ctx) : offlineOpener(ctx);
    return await runPointInTimeJob(job, disks, opener, sinkFor);
  } finally {
    await path.close();
  }
}

/** What a job on the target would read (see {@link estimateDomainBackup}). Changes nothing. */
export async function estimateDomainJob(
  target: DomainJobTarget,
  settings: SourceJobSettings,
): Promise<DiskEstimate[]> {
  const ctx = context(target, settings);
  const sizes = await diskSizes(ctx);
  const states = await Promise.all(target.names.map((n) => loadDiskState(target.stateDir, n)));
  const plans = planDomainDisks({
    disks: target.selected,
    states,
    sizes,
    checkpoints: await checkpointBook(ctx).list(),
    requested: ctx.level,
    imageBitmaps: target.live ? undefined : await Promise.all(
      target.selected.map((d) => imageBitmaps(ctx.host.shell, d)),
    ),
  });
  return plans.map((p, i) => ({
    diskName: target.names[i],
    level: p.level,
    ...(p.reason ? { fallback: p.reason } : {}),
    bytes: sizes[i],
    lastBackupId: states[i]?.lastBackupId ?? null,
    lastFullId: states[i]?.lastFullId ?? null,
  }));
}

interface DomainContext extends DomainJobTarget {
  /** Where this job's exports are served and how they are read. */
  access: ExportAccess;
  level: BackupLevel;
  takeOver: boolean;
  checkParent: SourceJobSettings["checkParent"];
  warn: (text: string) => void;
}

function context(target: DomainJobTarget, settings: SourceJobSettings): DomainContext {
  return {
    ...target,
    // Whatever the mode, qemu-nbd serves a shut-off domain's images on a unix
    // socket, read through the tunnel from a remote host.
    access: target.live ? target.exports ?? socketExports : socketExports,
    level: settings.level === "auto" ? "incremental" : settings.level,
    takeOver: settings.takeOver ?? false,
    checkParent: settings.checkParent,
    warn: (text) => settings.onMessage?.("warning", text),
  };
}

/** The selected disks' virtual sizes: libvirt's, or the images' without a domain. */
async function diskSizes(ctx: DomainContext): Promise<number[]> {
  return await Promise.all(ctx.selected.map(async (d) => {
    if (ctx.domain) return await ctx.domain.capacity(d.target);
    return (await imageInfo(ctx.host.shell, d.source))["virtual-size"];
  }));
}

/** The domain's checkpoints, and how one is removed (dirtybit's own only). */
interface CheckpointBook {
  /** All of them; those `expected` (the chains' own) may be read faster. */
  list(expected?: string[]): Promise<CheckpointInfo[]>;
  remove(name: string): Promise<void>;
}

/**
 * libvirt's checkpoints of a running domain; for one not running, libvirt's
 * metadata and the bitmaps in the images, or (no domain) the images' bitmaps
 * alone.
 */
function checkpointBook(ctx: DomainContext): CheckpointBook {
  const { domain } = ctx;
  if (ctx.live) {
    return {
      list: (expected) => domain!.checkpoints(expected),
      remove: (name) => domain!.deleteCheckpoint(name),
    };
  }
  const images = qcow2Images(ctx);
  return {
    list: async (expected) =>
      domain ? await domain.checkpoints(expected) : await imageCheckpoints(ctx, images),
    async remove(name) {
      for (const d of images) {
        if ((await imageBitmaps(ctx.host.shell, d)).has(name)) {
          await qemuImg(ctx.host.shell, ["bitmap", "--remove", d.source, name]);
        }
      }
      await domain?.deleteCheckpoint(name, true);
    },
  };
}

function qcow2Images(ctx: DomainContext): ImageDisk[] {
  return ctx.allDisks.filter((d): d is ImageDisk =>
    d.source !== undefined && d.device === "disk" && d.format === "qcow2" && d.type === "file"
  );
}

/**
 * Without a domain: each `dirtybit-` bitmap in the images is a checkpoint
 * of the disks that have it (its creation time from the backup id in it).
 */
async function imageCheckpoints(
  ctx: DomainContext,
  images: ImageDisk[],
): Promise<CheckpointInfo[]> {
  const byName = new Map<string, CheckpointInfo>();
  for (const d of images) {
    for (const name of await imageBitmaps(ctx.host.shell, d)) {
      if (!name.startsWith(CHECKPOINT_PREFIX)) continue;
      if (!byName.has(name)) byName.set(name, { name, bitmaps: new Map() });
      byName.get(name)!.bitmaps.set(d.target, name);
    }
  }
  return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * What both openers share: sizes, checkpoints (stale ones removed, another
 * state directory's refused or, with `--take-over`, removed) and the plan.
 */
async function plan(
  ctx: DomainContext,
  req: OpenRequest,
  book: CheckpointBook,
  options: { bitmapsOf?: Set<string>[]; before?: Promise<void> } = {},
) {
  const [sizes, owner, listed] = await Promise.all([
    diskSizes(ctx),
    ownerId(ctx.stateDir),
    book.list(
      req.states.flatMap((s) => s ? [s.checkpoint.incBitmap, s.checkpoint.baseBitmap] : []),
    ),
    options.before,
  ]);
  let checkpoints = ctx.live ? await adoptCheckpoints(ctx, req, owner, listed) : listed;
  const foreign = foreignCheckpoints(checkpoints, owner, ctx.selected.map((d) => d.target));
  if (foreign.length > 0) {
    const names = foreign.map((c) => c.name).join(", ");
    const owners = [
      ...new Set(foreign.map((c) => c.name.slice(CHECKPOINT_PREFIX.length).split("-")[0])),
    ].join(", ");
    if (!ctx.takeOver) {
      const taken = ctx.selected.map((d) => d.target).filter((t) =>
        foreign.some((c) => c.bitmaps.has(t))
      );
      throw new ChainError((p) =>
        `${taken.length > 1 ? `disks ${taken.join(", ")}` : `disk ${taken[0]}`} of ` +
        `${ctx.label} ${taken.length > 1 ? "each belongs" : "belongs"} to the chain of owner ` +
        `${owners} (another state directory; checkpoints ${names}): pass ${p("take_over")} ` +
        "to remove them and start a new chain here with a full backup"
      );
    }
    for (const cp of foreign) await book.remove(cp.name);
    ctx.warn(`took ${ctx.label} over from another state directory: removed checkpoints ${names}`);
  }
  // Checkpoints of attempts that failed or died, of chains that ended: no one needs them.
  const stale = new Set(
    staleCheckpoints(
      checkpoints.map((c) => c.name),
      owner,
      await loadAllDiskStates(ctx.stateDir),
    ),
  );
  for (const cp of checkpoints) if (stale.has(cp.name)) await book.remove(cp.name);
  checkpoints = checkpoints.filter((c) => !stale.has(c.name) && !foreign.includes(c));
  const broken = await Promise.all(req.states.map((state) => {
    const parentId = ctx.level === "differential" ? state?.lastFullId : state?.lastBackupId;
    const parent = state?.history.find((r) => r.backupId === parentId);
    return ctx.level !== "full" && parent ? ctx.checkParent?.(parent) : undefined;
  }));
  const plans = planDomainDisks({
    disks: ctx.selected,
    states: req.states,
    sizes,
    checkpoints,
    requested: ctx.level,
    imageBitmaps: options.bitmapsOf,
    broken,
  });
  return { sizes, checkpoints, plans, owner, name: checkpointName(owner, req.backupId) };
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
  owner: string,
  name: string,
): Promise<string[]> {
  const selected = new Set(ctx.names);
  const others = (await loadAllDiskStates(ctx.stateDir)).filter((s) => !selected.has(s.diskName));
  const going = states.filter((s, i): s is DiskState => s !== null && plans[i].level !== "full");
  return staleCheckpoints(names, owner, [...others, ...going], [name]);
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
  const domain = ctx.domain!;
  const shell = ctx.host.shell;
  const scratchDir = ctx.scratchDir ?? DEFAULT_SCRATCH_DIR;
  return {
    async open(req) {
      // A leftover job is ended before any checkpoint is removed.
      const { sizes, checkpoints, plans, owner, name } = await plan(ctx, req, checkpointBook(ctx), {
        before: endLeftoverJob(ctx),
      });
      const scratch = join(scratchDir, `dirtybit-${crypto.randomUUID().slice(0, 8)}`);
      // The next run removes it if this one is killed (on this machine; a remote
      // host keeps an empty directory).
      if (!ctx.host.remote) await req.run.add({ kind: "path", path: scratch });
      const exports = ctx.access.serve(scratch);
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
      const checkpointFile = withBitmap.length > 0 ? join(scratch, "checkpoint.xml") : undefined;
      await makeQemuDir(
        shell,
        scratchDir,
        scratch,
        domain.name,
        scratchDir === DEFAULT_SCRATCH_DIR,
        [
          { name: basename(backupFile), text: backupXml(exports.server, modes) },
          ...(checkpointFile
            ? [{
              name: basename(checkpointFile),
              text: checkpointXml({
                name,
                bitmapDisks: withBitmap,
                allDisks: modes.map((m) => m.target),
              }),
            }]
            : []),
        ],
      );
      let begun = false;
      const end = async (outcome: "commit" | "abort") => {
        const errors: unknown[] = [];
        if (begun) await domain.abortJob().catch((e) => errors.push(e));
        if (outcome === "abort" && begun && checkpointFile) {
          await domain.deleteCheckpoint(name).catch((e) => errors.push(e));
        }
        await removeHostDir(shell, scratch);
        if (errors.length) throw errors[0];
      };
      try {
        await ctx.quiesce?.freeze();
        try {
          await domain.backupBegin(backupFile, checkpointFile).catch((err) => {
            if (!/Permission denied/.test(err.message)) throw err;
            throw wrapError(
              err,
              SourceError,
              (p) => `${err.message}; QEMU must be able to reach ${p("scratch_dir")} ${scratchDir}`,
            );
          });
          begun = true;
        } finally {
          await ctx.quiesce?.thaw();
        }
        // backupXml named each export and bitmap after its disk.
        const disks = ctx.selected.map((d, i) =>
          pitDisk(
            d,
            plans[i],
            sizes[i],
            exports.uri(d.target),
            d.target,
            exportBitmapName(d.target),
          )
        );
        let ended = false;
        const pit: PointInTime = {
          disks,
          async commit() {
            ended = true;
            await end("commit");
            const names = [...checkpoints.map((c) => c.name), name];
            for (const stale of await unneededAfter(ctx, plans, req.states, names, owner, name)) {
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
 * A backup job that a killed dirtybit left running (its socket or scratch
 * files in a dirtybit scratch directory) is ended; any other backup job is
 * someone else's: refused.
 */
async function endLeftoverJob(ctx: DomainContext): Promise<void> {
  const domain = ctx.domain!;
  const xml = await domain.backupXml();
  if (xml === undefined) return;
  const paths = backupPaths(xml);
  if (paths.length === 0 || !paths.every((p) => SCRATCH_NAME.test(basename(dirname(p))))) {
    throw new SourceError(
      `domain ${domain.name} already runs a backup job that is not dirtybit's; ` +
        `wait for it to end (virsh domjobinfo ${domain.name})`,
    );
  }
  ctx.warn(`ended the backup job of ${domain.name} that an earlier dirtybit run left`);
  await domain.abortJob();
}

function offlineOpener(ctx: DomainContext): PointInTimeOpener {
  const { domain } = ctx;
  const shell = ctx.host.shell;
  const book = checkpointBook(ctx);
  const servers: ServedImage[] = [];
  const closeServers = async () => {
    for (const s of servers.splice(0)) await s.close().catch(() => {});
  };
  return {
    async open(req) {
      const bitmapsOf = await Promise.all(ctx.selected.map((d) => imageBitmaps(shell, d)));
      const { sizes, checkpoints, plans, owner, name } = await plan(ctx, req, book, { bitmapsOf });
      try {
        const disks: PointInTimeDisk[] = [];
        for (const [i, d] of ctx.selected.entries()) {
          const options = {
            format: d.format ?? "raw",
            readOnly: true,
            bitmap: plans[i].since,
            exportName: d.target,
          };
          const served = await (ctx.host.remote
            ? serveImageOnHost(ctx.host.remote, d.source, options)
            : serveImage(d.source, options)).catch((err) => {
              throw wrapError(
                err,
                SourceError,
                `cannot read ${d.source} of shut-off ${ctx.label} (did it start?): ${err.message}`,
              );
            });
          servers.push(served);
          disks.push(pitDisk(d, plans[i], sizes[i], served.uri, d.target, plans[i].since));
        }
        // The images are locked now: a domain that started before cannot be read consistently.
        const now = await runState(ctx);
        if (now !== "shut off") {
          throw new SourceError(`${ctx.label} started during the backup (${now}); run it again`);
        }
        let ended = false;
        const pit: PointInTime = {
          disks,
          async commit() {
            ended = true;
            await closeServers();
            const withBitmap = ctx.selected.filter((_, i) => plans[i].bitmap);
            for (const d of withBitmap) {
              await qemuImg(shell, ["bitmap", "--add", d.source, name]);
            }
            if (domain && withBitmap.length > 0) {
              await redefineCheckpoint(ctx, req, latest(checkpoints)?.name, name, withBitmap);
            }
            const names = [...checkpoints.map((c) => c.name), name];
            for (const stale of await unneededAfter(ctx, plans, req.states, names, owner, name)) {
              await book.remove(stale);
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

/**
 * Whether what is read offline still does not run: the domain's state, or
 * without a domain whether one of the VM's name was defined and runs.
 */
async function runState(ctx: DomainContext): Promise<string> {
  if (ctx.domain) return await ctx.domain.state();
  const r = await ctx.host.shell.run(["virsh", "-c", SYSTEM_URI, "domstate", ctx.label]);
  return r.code === 0 ? r.stdout.trim() : "shut off";
}

/**
 * A running domain defined afresh (CloudStack defines a VM's domain anew at
 * every start) knows none of the checkpoints whose bitmaps its images still
 * carry and QEMU loaded: this state directory's are made known to libvirt
 * again, oldest first, each only if libvirt finds its bitmaps enabled in the
 * running disks (`--redefine-validate`), so the chain goes on. Returns the
 * checkpoints libvirt knows then.
 */
async function adoptCheckpoints(
  ctx: DomainContext,
  req: OpenRequest,
  owner: string,
  checkpoints: CheckpointInfo[],
): Promise<CheckpointInfo[]> {
  const known = new Set(checkpoints.map((c) => c.name));
  // Only when a chain here needs one: a domain that kept its checkpoints costs nothing.
  if (req.states.every((s) => !s || known.has(s.checkpoint.incBitmap))) return checkpoints;
  const images = qcow2Images(ctx);
  const bitmaps = await Promise.all(images.map((d) => imageBitmaps(ctx.host.shell, d, true)));
  const mine = `${CHECKPOINT_PREFIX}${owner}-`;
  const names = [...new Set(bitmaps.flatMap((b) => [...b]))]
    .filter((n) => n.startsWith(mine) && !known.has(n)).sort();
  if (names.length === 0) return checkpoints;
  let parent = latest(checkpoints)?.name;
  const adopted: string[] = [];
  for (const name of names) {
    const withBitmap = images.filter((_, i) => bitmaps[i].has(name));
    try {
      await redefineCheckpoint(ctx, req, parent, name, withBitmap, true);
    } catch (err) {
      ctx.warn(`libvirt did not take checkpoint ${name} back: ${(err as Error).message}`);
      break;
    }
    adopted.push(name);
    parent = name;
  }
  if (adopted.length === 0) return checkpoints;
  ctx.warn(`made the checkpoints its images still carry known to libvirt again: ${adopted}`);
  return await ctx.domain!.checkpoints();
}

/** The newest of the checkpoints. */
function latest(checkpoints: CheckpointInfo[]): CheckpointInfo | undefined {
  return checkpoints.reduce<CheckpointInfo | undefined>(
    (a, c) => (!a || (c.creationTime ?? 0) >= (a.creationTime ?? 0) ? c : a),
    undefined,
  );
}

/** Tells libvirt of a checkpoint whose bitmaps `withBitmap`'s images carry. */
async function redefineCheckpoint(
  ctx: DomainContext,
  req: OpenRequest,
  parent: string | undefined,
  name: string,
  withBitmap: ImageDisk[],
  validate = false,
): Promise<void> {
  const file = ctx.host.remote
    ? `/tmp/dirtybit-checkpoint-${crypto.randomUUID().slice(0, 8)}.xml`
    : join(req.localDir, "checkpoint.xml");
  await writeHostFile(
    ctx.host.shell,
    file,
    checkpointXml({
      name,
      bitmapDisks: withBitmap.map((d) => d.target),
      allDisks: ctx.allDisks.filter((d) => d.source !== undefined).map((d) => d.target),
      redefine: { parent, creationTime: Math.floor(Date.now() / 1000) },
    }),
  );
  try {
    await ctx.domain!.redefineCheckpoint(file, validate);
  } finally {
    await removeHostDir(ctx.host.shell, file);
  }
}

/** What `qemu-img info` tells of an image (`inUse`: one a running QEMU has open). */
async function imageInfo(
  shell: HostShell,
  path: string,
  inUse = false,
): Promise<{
  format: string;
  "virtual-size": number;
  "format-specific"?: { data?: { bitmaps?: { name: string }[] } };
}> {
  return JSON.parse(
    await qemuImg(shell, ["info", ...(inUse ? ["-U"] : []), "--output=json", path]),
  );
}

/**
 * An image on primary storage as a disk (no domain defines it): its format
 * from the image itself, named `target`.
 */
export async function imageDisk(
  shell: HostShell,
  path: string,
  target: string,
): Promise<ImageDisk> {
  const { format } = await imageInfo(shell, path);
  return { type: "file", device: "disk", target, bus: "", source: path, format };
}

/** The persistent bitmaps of a disk image (`inUse`: of a running domain, read beside QEMU). */
async function imageBitmaps(
  shell: HostShell,
  disk: ImageDisk,
  inUse = false,
): Promise<Set<string>> {
  if (disk.format !== "qcow2") return new Set();
  const info = await imageInfo(shell, disk.source, inUse);
  return new Set((info["format-specific"]?.data?.bitmaps ?? []).map((b) => b.name));
}

async function qemuImg(shell: HostShell, args: string[]): Promise<string> {
  const r = await shell.run(["qemu-img", ...args]);
  if (r.code !== 0) {
    throw new SourceError(
      `qemu-img ${args[0]} ${args.at(-2) ?? ""} failed: ${r.stderr.trim().split("\n").pop()}`,
    );
  }
  return r.stdout;
}
