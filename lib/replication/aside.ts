/**
 * Before a failback resync overwrites the original primary's disk, the
 * blocks it wrote after the last cycle it sent are kept aside in a sparse
 * qcow2 of the disk's size, `DIR/NAME.divergent-after-cycle-N.qcow2`: only
 * those blocks are allocated (`qemu-img map` lists them), at their offsets,
 * so the operator can inspect or copy them back. Which blocks: those whose
 * xxHash64 differs from the sender's hash DB committed at cycle N (it
 * describes the replica, so the disk, at that cycle). Without such a DB the
 * whole disk is copied aside.
 *
 * @module
 */
import { join } from "node:path";
import type { HashDb } from "../cbt/hashdb.ts";
import { exists } from "../core/files.ts";
import { cycleKey, hashDbPath, openHashDb } from "./hashes.ts";
import { name as checkName } from "./messages.ts";
import {
  createReplicaImage,
  openReplicaImage,
  type ReplicaFormat,
  type ReplicaImage,
  runQemuImg,
} from "./replica_image.ts";

/** What was kept aside. */
export interface Kept {
  /** Absent when nothing had changed after the cycle. */
  path?: string;
  bytes: number;
  /** True when there was no hash DB of the cycle: the whole disk was copied. */
  whole: boolean;
  /** The divergent ranges, `[offset, length]`, merged; absent when unknown (`whole`). */
  extents?: [number, number][];
}

/** The point the original primary's disk last matched the replica: seed and cycle. */
export interface DivergencePoint {
  seedId?: string;
  cycle?: number;
}

/** Collects the divergent blocks of one disk while its blocks are hashed in order. */
export class DivergentBlocks {
  #bytes = 0;
  readonly #extents: [number, number][] = [];

  private constructor(
    readonly path: string,
    readonly size: number,
    readonly db: HashDb | null,
    readonly image: ReplicaImage | null,
  ) {}

  /**
   * Prepares the aside image of disk `name` (image `source` of `format`)
   * in `dir`; copies the whole disk at once when no hash DB of `point` is
   * there to tell the divergent blocks.
   */
  static async open(
    dir: string,
    name: string,
    source: { path: string; format: ReplicaFormat; size: number },
    point: DivergencePoint,
    blockSize: number,
  ): Promise<DivergentBlocks> {
    const path = join(
      dir,
      `${checkName(name)}.divergent-after-cycle-${point.cycle ?? "unknown"}.qcow2`,
    );
    await Deno.remove(path).catch(() => {});
    let db: HashDb | null = null;
    if (
      point.seedId !== undefined && point.cycle !== undefined && await exists(hashDbPath(dir, name))
    ) {
      db = openHashDb(dir, name, blockSize, source.size);
      if (db.id !== cycleKey(point.seedId, point.cycle)) {
        db.close();
        db = null;
      }
    }
    if (!db) {
      await runQemuImg(
        ["convert", "-U", "-f", source.format, "-O", "qcow2", source.path, path],
        path,
      );
      return new DivergentBlocks(path, source.size, null, null);
    }
    await createReplicaImage(path, "qcow2", source.size);
    return new DivergentBlocks(path, source.size, db, await openReplicaImage(path, "qcow2"));
  }

  /** Block `index` of the disk reads `data` (hash `hash`): kept when it differs from the DB. */
  async block(index: number, data: Uint8Array, hash: bigint): Promise<void> {
    if (!this.db || !this.image || this.db.get(index) === hash) return;
    const offset = index * this.db.blockSize;
    await this.image.writeData(offset, data);
    this.#bytes += data.length;
    const last = this.#extents.at(-1);
    if (last && last[0] + last[1] === offset) last[1] += data.length;
    else this.#extents.push([offset, data.length]);
  }

  /** Makes the kept blocks durable; removes an aside image that holds none. */
  async finish(): Promise<Kept> {
    if (!this.db || !this.image) {
      return { path: this.path, bytes: this.size, whole: true };
    }
    this.db.close();
    await this.image.flush();
    await this.image.close();
    if (this.#bytes === 0) {
      await Deno.remove(this.path);
      return { bytes: 0, whole: false, extents: [] };
    }
    return { path: this.path, bytes: this.#bytes, whole: false, extents: this.#extents };
  }

  /** Drops a half-written aside image (the hashing failed). */
  async abandon(): Promise<void> {
    this.db?.close();
    await this.image?.close().catch(() => {});
    await Deno.remove(this.path).catch(() => {});
  }
}
