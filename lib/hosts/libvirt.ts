/**
 * Driving a VM's QEMU on a libvirt KVM host (how CloudStack's KVM agent runs
 * VMs: domain name = instance name, e.g. `i-2-10-VM`) over SSH.
 *
 * Choice of interface: raw QMP through `virsh qemu-monitor-command`
 * ({@link VirshQmp}), not libvirt's checkpoint/backup API. Both give a
 * correct point in time for all disks at once (a QMP `transaction`, or one
 * `backup-begin` job), but only QMP lets the same engine code (lib/qemu) run
 * unchanged against qemu-storage-daemon, a bare QEMU and a libvirt VM,
 * including its bitmap lifecycle: bitmaps are added, rotated and merged back
 * on failure by dirtybit, so a failed or cancelled backup never loses changes.
 * With the backup API, libvirt owns the checkpoint bitmaps (all kept
 * enabled, merged at backup time), a pull backup takes ~3 s to start here,
 * and a second code path would have to mirror the engine's failure handling.
 * The price of QMP: libvirt marks the domain "tainted: custom-monitor" in its
 * log (harmless for CloudStack), and the nodes, exports and files dirtybit
 * adds are invisible to libvirt, so the engine must remove them itself (it
 * does: scoped ids and `removeLeftovers`).
 *
 * Disks are mapped to block nodes by identity, never by position: the disk's
 * device alias from the live domain XML names its qdev path in `query-block`,
 * whose `inserted.node-name` is the node (libvirt numbers nodes in reverse
 * disk order, and a backing file has its own node). The empty cdrom is
 * skipped.
 *
 * Files QEMU must open or create (fleece overlays, NBD sockets) go to a
 * directory owned by the user QEMU runs as (`libvirt-qemu` on Debian/Ubuntu,
 * `qemu` on EL), see {@link LibvirtDomain.makeScratchDir}.
 *
 * @module
 */
import { SourceError } from "../core/errors.ts";
import { QmpError, type QmpTransport } from "../qemu/qmp.ts";
import { shellCommand, type SshHost } from "./ssh.ts";

/** libvirt connection URI used for every virsh call (CloudStack's KVM agent uses the system one). */
export const LIBVIRT_URI = "qemu:///system";

/** One `<disk>` of a domain, as the live domain XML describes it. */
export interface DomainDisk {
  /** Where the data lives: `file`, `block`, `network`, `volume`. */
  type: string;
  /** `disk`, `cdrom`, `floppy`, `lun`. */
  device: string;
  /** Guest-visible target: `vda`, `vdb`, `hdc`. */
  target: string;
  /** `virtio`, `ide`, `scsi`, `sata`. */
  bus: string;
  /** Image file (or block device) path; undefined for an empty cdrom. */
  source?: string;
  /** Image format from `<driver type=…>` (qcow2, raw). */
  format?: string;
  /** `<serial>` (CloudStack: the volume id's first 20 hex digits). */
  serial?: string;
  /** libvirt's device alias (`virtio-disk0`), present on a running domain. */
  alias?: string;
}

/** A disk of a running domain with the block node QEMU reads it through. */
export interface DiskNode extends DomainDisk {
  source: string;
  alias: string;
  /** The top (format) node of the disk: what bitmaps and fleecing attach to. */
  node: string;
  /** qdev path of the guest device (for HMP `qemu-io -d`). */
  qdev: string;
  /** Virtual size in bytes. */
  size: number;
}

/** Decodes the five XML entities libvirt writes in attribute values and text. */
export function xmlText(s: string): string {
  return s.replaceAll("&lt;", "<").replaceAll("&gt;", ">").replaceAll("&quot;", '"')
    .replaceAll("&apos;", "'").replaceAll("&amp;", "&");
}

/** The value of attribute `name` in an element's start tag, decoded. */
export function attr(tag: string, name: string): string | undefined {
  const m = tag.match(new RegExp(`\\s${name}=(?:'([^']*)'|"([^"]*)")`));
  return m ? xmlText(m[1] ?? m[2]) : undefined;
}

/**
 * The `<disk>` elements of a domain XML as libvirt formats it (`virsh
 * dumpxml`). Only the disk's own `<source>` counts, not those of its
 * `<backingStore>` chain.
 */
export function parseDomainDisks(xml: string): DomainDisk[] {
  const disks: DomainDisk[] = [];
  for (const m of xml.matchAll(/<disk\b([^>]*)>([\s\S]*?)<\/disk>/g)) {
    const [, diskAttrs, body] = m;
    const own = body.replace(/<backingStore\b[\s\S]*?<\/backingStore>/g, "");
    const source = own.match(/<source\b[^>]*>/)?.[0];
    const target = own.match(/<target\b[^>]*>/)?.[0] ?? "";
    const driver = own.match(/<driver\b[^>]*>/)?.[0] ?? "";
    const alias = own.match(/<alias\b[^>]*>/)?.[0];
    const serial = own.match(/<serial>([^<]*)<\/serial>/)?.[1];
    const dev = attr(target, "dev");
    if (!dev) continue;
    disks.push({
      type: attr(diskAttrs, "type") ?? "file",
      device: attr(diskAttrs, "device") ?? "disk",
      target: dev,
      bus: attr(target, "bus") ?? "",
      source: source
        ? attr(source, "file") ?? attr(source, "dev") ?? attr(source, "name")
        : undefined,
      format: attr(driver, "type"),
      serial: serial === undefined ? undefined : xmlText(serial),
      alias: alias ? attr(alias, "name") : undefined,
    });
  }
  return disks;
}

/** The part of a `query-block` entry used to map disks. */
export interface QueryBlockEntry {
  device: string;
  qdev?: string;
  inserted?: {
    "node-name"?: string;
    file?: string;
    image?: { "virtual-size"?: number };
  };
}

/**
 * Pairs each disk that has an image (the empty cdrom is skipped) with its
 * block node from `query-block`, by the device alias in the qdev path. Throws
 * a {@link SourceError} if a disk has no node or QEMU opened another file.
 */
export function mapDiskNodes(
  domain: string,
  disks: DomainDisk[],
  blocks: QueryBlockEntry[],
): DiskNode[] {
  const mapped: DiskNode[] = [];
  for (const disk of disks) {
    if (!disk.source) continue;
    if (!disk.alias) {
      throw new SourceError(
        `disk ${disk.target} of ${domain} has no device alias; is the VM running?`,
      );
    }
    const candidates = [
      `/machine/peripheral/${disk.alias}/virtio-backend`,
      `/machine/peripheral/${disk.alias}`,
    ];
    const entry = blocks.find((b) =>
      (b.qdev !== undefined && candidates.includes(b.qdev)) || b.device === `drive-${disk.alias}`
    );
    const node = entry?.inserted?.["node-name"];
    if (!entry || !node) {
      throw new SourceError(
        `disk ${disk.target} (${disk.alias}) of ${domain} has no block node in query-block`,
      );
    }
    const file = entry.inserted?.file;
    if (file !== undefined && file !== disk.source && !file.startsWith("json:")) {
      throw new SourceError(
        `disk ${disk.target} of ${domain}: libvirt says ${disk.source} but QEMU has ${file} open`,
      );
    }
    mapped.push({
      ...disk,
      source: disk.source,
      alias: disk.alias,
      node,
      qdev: entry.qdev ?? candidates[0],
      size: entry.inserted?.image?.["virtual-size"] ?? 0,
    });
  }
  return mapped;
}

/** Splits virsh's answer to `qemu-monitor-command` into the QMP return or a {@link QmpError}. */
export function parseMonitorReply<T>(command: string, stdout: string): T {
  let reply: { return?: T; error?: { class?: string; desc?: string } };
  try {
    reply = JSON.parse(stdout);
  } catch {
    throw new SourceError(
      `QMP ${command} through virsh gave no JSON reply: ${stdout.trim().slice(0, 200)}`,
    );
  }
  if (reply.error) {
    throw new QmpError(
      command,
      reply.error.class ?? "GenericError",
      reply.error.desc ?? "no description",
    );
  }
  return reply.return as T;
}

/**
 * QMP through `virsh qemu-monitor-command DOMAIN '{json}'` on the host: one
 * SSH channel per command over the multiplexed connection. There are no
 * events on this transport; lib/qemu polls instead. Using it marks the
 * domain "tainted: custom-monitor" in libvirt's log.
 */
export class VirshQmp implements QmpTransport {
  #closed = false;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(
    readonly host: SshHost,
    readonly domain: string,
    readonly commandTimeoutMs = 60_000,
  ) {}

  get name(): string {
    return `${this.host.target.host}/${this.domain}`;
  }

  /** Runs one QMP command; commands run one at a time, in order. */
  execute<T>(command: string, args?: object): Promise<T> {
    const run = this.#queue.then(() => this.#execute<T>(command, args));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #execute<T>(command: string, args?: object): Promise<T> {
    if (this.#closed) throw new SourceError(`QMP to ${this.domain} is closed`);
    const json = JSON.stringify(
      args === undefined ? { execute: command } : { execute: command, arguments: args },
    );
    const result = await this.host.run(
      ["virsh", "-c", LIBVIRT_URI, "qemu-monitor-command", this.domain, json],
      { timeoutMs: this.commandTimeoutMs },
    );
    if (result.code !== 0) {
      throw new SourceError(
        `virsh qemu-monitor-command ${this.domain} ${command} failed on ${this.host.target.host}: ` +
          `${oneLine(result.stderr) || "no error text"}`,
      );
    }
    return parseMonitorReply<T>(command, result.stdout);
  }

  /**
   * Runs an HMP command line (e.g. `qemu-io -d QDEV "write ..."`). HMP
   * reports errors as text with a success status, so text that starts with
   * "Error" or contains "failed" is thrown as a {@link SourceError}.
   */
  async hmp(commandLine: string): Promise<string> {
    const result = await this.host.run(
      ["virsh", "-c", LIBVIRT_URI, "qemu-monitor-command", this.domain, "--hmp", commandLine],
      { timeoutMs: this.commandTimeoutMs },
    );
    const text = result.stdout.trim();
    if (result.code !== 0 || /^Error|failed|error:/im.test(text)) {
      throw new SourceError(
        `HMP "${commandLine.slice(0, 60)}" on ${this.domain} failed: ${
          oneLine(text || result.stderr)
        }`,
      );
    }
    return text;
  }

  /** Nothing to release (each command is its own SSH channel); later commands throw. */
  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }
}

/** A running libvirt domain on a host reached by SSH. */
export class LibvirtDomain {
  /** QMP into the domain's QEMU. */
  readonly qmp: VirshQmp;

  private constructor(readonly host: SshHost, readonly name: string) {
    this.qmp = new VirshQmp(host, name);
  }

  /**
   * Finds the domain and checks it runs. Throws a {@link SourceError} if the
   * host has no such domain (e.g. the VM migrated) or it is not running.
   */
  static async open(host: SshHost, name: string): Promise<LibvirtDomain> {
    const state = await host.run(["virsh", "-c", LIBVIRT_URI, "domstate", name], {
      timeoutMs: 30_000,
    });
    if (state.code !== 0) {
      if (/failed to get domain|Domain not found/i.test(state.stderr)) {
        throw new SourceError(
          `VM ${name} is not defined on KVM host ${host.target.host}; it may have migrated: ` +
            `resolve its host again`,
        );
      }
      throw new SourceError(
        `virsh on ${host.target.host} failed: ${oneLine(state.stderr) || "no error text"}; ` +
          `is libvirtd running?`,
      );
    }
    const s = state.stdout.trim();
    if (s !== "running") {
      throw new SourceError(`VM ${name} on ${host.target.host} is ${s}, not running`);
    }
    return new LibvirtDomain(host, name);
  }

  /** All disks of the live domain definition, cdroms included. */
  async domainDisks(): Promise<DomainDisk[]> {
    const xml = await this.host.runChecked(["virsh", "-c", LIBVIRT_URI, "dumpxml", this.name]);
    return parseDomainDisks(xml);
  }

  /** Disks that carry an image, each with its block node (see {@link mapDiskNodes}). */
  async diskNodes(): Promise<DiskNode[]> {
    const disks = await this.domainDisks();
    const blocks = await this.qmp.execute<QueryBlockEntry[]>("query-block");
    return mapDiskNodes(this.name, disks, blocks);
  }

  /** The user the domain's QEMU process runs as (from its pid file). */
  async qemuUser(): Promise<string> {
    const out = await this.host.runScript(
      `ps -o user= -p "$(cat ${shellCommand([`/run/libvirt/qemu/${this.name}.pid`])})"`,
      { timeoutMs: 30_000 },
    );
    const user = out.stdout.trim();
    if (out.code !== 0 || !user) {
      throw new SourceError(
        `cannot find the QEMU process of ${this.name} on ${this.host.target.host}`,
      );
    }
    return user;
  }

  /**
   * Creates a private directory (mode 0700) owned by QEMU's user under
   * `/var/lib/libvirt/qemu/dirtybit/`, for fleece files and NBD sockets
   * that QEMU itself creates. Remove it with {@link removeScratchDir}.
   */
  async makeScratchDir(jobId: string): Promise<string> {
    if (!/^[A-Za-z0-9_.-]+$/.test(jobId)) throw new SourceError(`bad scratch dir id ${jobId}`);
    const user = await this.qemuUser();
    const dir = `/var/lib/libvirt/qemu/dirtybit/${this.name}-${jobId}`;
    await this.host.runChecked(["install", "-d", "-m", "0755", "/var/lib/libvirt/qemu/dirtybit"]);
    await this.host.runChecked(["install", "-d", "-m", "0700", "-o", user, dir]);
    return dir;
  }

  /** Removes a directory made by {@link makeScratchDir} and everything in it. */
  async removeScratchDir(dir: string): Promise<void> {
    if (!dir.startsWith("/var/lib/libvirt/qemu/dirtybit/") || dir.includes("..")) {
      throw new SourceError(`refusing to remove ${dir}: not a dirtybit scratch dir`);
    }
    await this.host.runChecked(["rm", "-rf", "--", dir]);
  }
}

function oneLine(s: string): string {
  return s.trim().split("\n").map((l) => l.trim()).filter(Boolean).join("; ").slice(0, 300);
}
