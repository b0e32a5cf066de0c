/**
 * libvirt's domain XML as dirtybit reads it: the `<disk>` elements of a
 * domain (`virsh dumpxml`), and the attribute and text decoding they need.
 * Pure: no I/O. The domain itself is driven through virsh (lib/hosts/virsh.ts).
 *
 * @module
 */

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
