/**
 * The receiver's replicas: `DIR/NAME.qcow2|raw`, `DIR/NAME.state.json` and,
 * while a cycle is in flight, `DIR/NAME.journal`.
 *
 * A cycle is journaled and synced, then marked committed in the state file,
 * then applied to the image, flushed, and marked applied. After a crash,
 * {@link ReplicaStore.open} replays a committed journal and deletes one that
 * was never committed, so the image always equals the source at the last
 * applied cycle. Seed batches are written straight into the image: until
 * the seed completes the replica is not yet a copy of anything, and the state
 * file records how far it is durable so an interrupted seed resumes there.
 *
 * @module
 */
import { join } from "node:path";
import { ChainError, describeError, InputError, TargetError } from "../core/errors.ts";
import { readJsonFile, writeFileAtomic } from "../core/atomic_file.ts";
import { zstdDecompressExact } from "../stream/zstd.ts";
import { xxh64 } from "@node-rs/xxhash";
import { NbdSource } from "../nbd/reader.ts";
import { bitmapNames, type DiskCheckpoint } from "../qemu/mod.ts";
import { serveImage } from "../qemu/qemu_nbd.ts";
import { DivergentBlocks, type Kept } from "./aside.ts";
import { JournalWriter, readJournal } from "./journal.ts";
import { loadRole, saveRole } from "./role_file.ts";
import { applyStep, checkStep, type DiskRole } from "./roles.ts";
import { replicationScope } from "./attempt.ts";
import type {
  BeginMessage,
  ConfirmMessage,
  DataMessage,
  HashesMessage,
  KeptMessage,
  Message,
  ReplicaStats,
  RoleMessage,
  StateMessage,
  ZeroMessage,
} from "./messages.ts";
import { name as checkName } from "./messages.ts";
import {
  createReplicaImage,
  openReplicaImage,
  type ReplicaFormat,
  type ReplicaImage,
  runQemuImg,
} from "./replica_image.ts";
import { makeDirectory } from "../core/files.ts";

/** The state file of one replica. */
export interface ReplicaState {
  name: string;
  format: ReplicaFormat;
  size: number;
  /** Identifies the seed this replica descends from; cycles of another seed are refused. */
  seedId: string;
  /** Last applied cycle (0 = the completed seed); absent while seeding. */
  cycle?: number;
  /** While seeding: everything below this offset is durable. */
  seedOffset?: number;
  /**
   * The image when it is not `DIR/NAME.FORMAT`: the original primary's own
   * disk, resynced into during a failback.
   */
  image?: string;
  /** A journaled, synced cycle not yet (completely) applied; `bytes` of disk it covers. */
  pending?: { cycle: number; journalBytes: number; bytes?: number };
  /** The last applied cycle: bytes of disk it changed (the recovery point's last step). */
  lastCycleBytes?: number;
  updatedAt: string;
  /** When the last cycle was applied (ISO 8601). */
  appliedAt?: string;
  /** Data payload bytes received since the seed (or resync) began. */
  bytesReceived: number;
  /**
   * Since the seed (or resync) began: cycles applied after the seed, bytes of
   * disk and bytes on the wire the batches took, and failed batches.
   * Absent in state files of older versions: counted from their next batch.
   */
  totals?: ReplicaTotals;
}

/** Where a batch's messages come from: a sender's channel. */
export interface BatchInput {
  next(): Promise<Message>;
  /** Bytes the channel received so far (frames included). */
  wireBytes(): number;
}

/** What a batch brought: payload bytes, bytes of disk covered, bytes on the wire. */
interface Received {
  payloadBytes: number;
  bytes: number;
  wireBytes: number;
}

/** Counters of {@link ReplicaState.totals}. */
export interface ReplicaTotals {
  cycles: number;
  dirtyBytes: number;
  wireBytes: number;
  errors: number;
  lastError?: string;
  lastErrorAt?: string;
}

const NO_TOTALS: ReplicaTotals = { cycles: 0, dirtyBytes: 0, wireBytes: 0, errors: 0 };

/** What `replicate status` shows of a replica. */
function statsOf(s: ReplicaState): ReplicaStats {
  const t = s.totals ?? NO_TOTALS;
  return {
    ...(s.appliedAt ? { appliedAt: s.appliedAt } : {}),
    cycles: t.cycles,
    dirtyBytes: t.dirtyBytes,
    payloadBytes: s.bytesReceived,
    wireBytes: t.wireBytes,
    errors: t.errors,
    ...(t.lastError ? { lastError: t.lastError } : {}),
  };
}

/** `state`'s totals after a batch of `received` (see {@link ReplicaStore.receiveBatch}). */
function counted(
  state: ReplicaState,
  received: Received,
): Pick<ReplicaState, "bytesReceived" | "totals"> {
  const t = state.totals ?? NO_TOTALS;
  return {
    bytesReceived: state.bytesReceived + received.payloadBytes,
    totals: {
      ...t,
      dirtyBytes: t.dirtyBytes + received.bytes,
      wireBytes: t.wireBytes + received.wireBytes,
    },
  };
}

/** Named points of a batch, for crash tests (see {@link ReplicaStoreOptions.onPoint}). */
export type BatchPoint =
  | "journal-midway"
  | "journal-synced"
  | "journal-committed"
  | "apply-midway"
  | "seed-midway";

/** Options of {@link ReplicaStore.open}. */
export interface ReplicaStoreOptions {
  /** Format of replicas created from now on (existing ones keep theirs). */
  format: ReplicaFormat;
  /** Called at each {@link BatchPoint}; crash tests exit the process there. */
  onPoint?: (point: BatchPoint) => void;
}

/** What recovery did at open, for the receiver's log. */
export interface RecoveryNote {
  name: string;
  action: "replayed" | "discarded";
  cycle: number;
}

/**
 * Adds a fresh pair of checkpoint bitmaps (scope of `node`) to a qcow2 that
 * no QEMU has open, so the writes of the VM started on it next are recorded
 * from the first one. A pair of the same id left by an interrupted earlier
 * call is replaced.
 */
export async function addImageCheckpoint(
  image: string,
  node: string,
  id: string,
): Promise<DiskCheckpoint> {
  const names = bitmapNames(id, await replicationScope(node));
  for (const bitmap of [names.inc, names.base]) {
    await runQemuImg(["bitmap", "-f", "qcow2", "--remove", image, bitmap], image).catch(() => {});
    await runQemuImg(["bitmap", "-f", "qcow2", "--add", image, bitmap], image);
  }
  return { node, incBitmap: names.inc, baseBitmap: names.base };
}

/** The replicas in one directory. */
export class ReplicaStore {
  readonly #images = new Map<string, ReplicaImage>();
  readonly #busy = new Set<string>();

  private constructor(readonly dir: string, readonly options: ReplicaStoreOptions) {}

  /** Opens the directory (creating it) and recovers every replica from a crash. */
  static async open(
    dir: string,
    options: ReplicaStoreOptions,
  ): Promise<{ store: ReplicaStore; recovered: RecoveryNote[] }> {
    await makeDirectory(dir, "the replica directory");
    const store = new ReplicaStore(dir, options);
    const recovered: RecoveryNote[] = [];
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.isFile || !entry.name.endsWith(".journal")) continue;
      const name = entry.name.slice(0, -".journal".length);
      const state = await store.state(name);
      if (state?.pending) {
        await store.#apply(state, state.pending.cycle, state.pending.journalBytes);
        recovered.push({ name, action: "replayed", cycle: state.pending.cycle });
      } else {
        await Deno.remove(join(dir, entry.name));
        recovered.push({ name, action: "discarded", cycle: (state?.cycle ?? -1) + 1 });
      }
      await store.release(name);
    }
    return { store, recovered };
  }

  /** The state of replica `name`, or null if there is none. */
  async state(name: string): Promise<ReplicaState | null> {
    return await readJsonFile<ReplicaState>(this.#path(name, "state.json"));
  }

  /** All replicas' states, sorted by name. */
  async list(): Promise<ReplicaState[]> {
    const out: ReplicaState[] = [];
    for await (const entry of Deno.readDir(this.dir)) {
      if (!entry.isFile || !entry.name.endsWith(".state.json")) continue;
      const state = await this.state(entry.name.slice(0, -".state.json".length));
      if (state) out.push(state);
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  /** What the receiver tells a sender about replica `name`. */
  async describe(name: string): Promise<StateMessage> {
    const s = await this.state(name);
    const role = await loadRole(this.dir, name, "replica");
    const answer: StateMessage["role"] = role.role === "replica" && role.state === "replicating"
      ? undefined
      : {
        role: `${role.role}/${role.state}`,
        since: role.since,
        ...(role.step ? { step: role.step } : {}),
        ...(role.cycle === undefined ? {} : { cycle: role.cycle }),
        ...(role.unfenced ? { unfenced: true } : {}),
      };
    if (!s) return { type: "state", name, ...(answer ? { role: answer } : {}) };
    return {
      type: "state",
      name,
      seedId: s.seedId,
      size: s.size,
      ...(s.cycle === undefined ? {} : { cycle: s.cycle }),
      ...(s.seedOffset === undefined ? {} : { seedOffset: s.seedOffset }),
      ...(answer ? { role: answer } : {}),
      stats: statsOf(s),
    };
  }

  /** Counts a batch of replica `name` that failed here (its first line is kept). */
  async recordError(name: string, err: unknown): Promise<void> {
    const state = await this.state(name);
    if (!state) return;
    const t = state.totals ?? NO_TOTALS;
    await this.#save({
      ...state,
      totals: {
        ...t,
        errors: t.errors + 1,
        lastError: describeError(err).split("\n")[0],
        lastErrorAt: new Date().toISOString(),
      },
    });
  }

  /** Path of replica `name`'s image. */
  async imagePath(name: string): Promise<string> {
    const s = await this.state(name);
    return s?.image ?? this.#path(name, s?.format ?? this.options.format);
  }

  /** Claims replica `name` for one connection; a second concurrent claim is refused. */
  claim(name: string): void {
    checkName(name);
    if (this.#busy.has(name)) {
      throw new TargetError(`replica ${name} is busy with another sender: one sender per disk`);
    }
    this.#busy.add(name);
  }

  /** Ends a claim and closes the replica's image. */
  async release(name: string): Promise<void> {
    this.#busy.delete(name);
    await this.#closeImage(name);
  }

  async #closeImage(name: string): Promise<void> {
    const image = this.#images.get(name);
    this.#images.delete(name);
    await image?.close();
  }

  /**
   * Receives one batch whose `begin` has arrived; `input` yields the
   * following messages up to `end`. Returns the confirmation to send once the
   * batch is durable. A refused batch throws ChainError (wrong seed or cycle)
   * or InputError (malformed); nothing of it reaches the replica then.
   */
  async receiveBatch(
    name: string,
    begin: BeginMessage,
    input: BatchInput,
  ): Promise<ConfirmMessage> {
    const state = await this.state(name);
    if (begin.kind === "resync") return await this.#receiveResync(name, state, begin, input);
    // A promoted or fenced disk takes no cycles: its image is (or was) a VM's.
    checkStep(await loadRole(this.dir, name, "replica"), "receive");
    if (begin.kind === "seed") return await this.#receiveSeed(name, state, begin, input);
    if (!state || state.seedId !== begin.seedId) {
      throw new ChainError(
        `replica ${name} is not seeded from seed ${begin.seedId}: run seed first`,
      );
    }
    if (state.cycle === undefined) {
      throw new ChainError(
        `replica ${name} is still seeding: finish the seed before pushing cycles`,
      );
    }
    if (begin.size !== state.size) {
      throw new ChainError(
        `disk ${name} is now ${begin.size} bytes, the replica ${state.size}: seed it again`,
      );
    }
    if (begin.cycle !== state.cycle + 1 || begin.base > state.cycle) {
      throw new ChainError(
        `replica ${name} is at cycle ${state.cycle}: cannot apply cycle ${begin.cycle} based on ${begin.base}`,
      );
    }
    await this.#journalAndApply(state, begin, input);
    return { type: "confirm", seedId: begin.seedId, cycle: begin.cycle };
  }

  /**
   * Journals a batch, syncs it, records it as committed, applies it and
   * records the cycle (see the module comment).
   */
  async #journalAndApply(
    state: ReplicaState,
    begin: BeginMessage,
    input: BatchInput,
  ): Promise<void> {
    const name = state.name;
    const journalPath = this.#path(name, "journal");
    const journal = await JournalWriter.create(journalPath);
    let received: Received;
    try {
      await journal.append(begin);
      received = await this.#collect(begin, input, async (msg, index) => {
        await journal.append(msg);
        if (index === 8) this.options.onPoint?.("journal-midway");
      });
      await journal.syncAndClose();
    } catch (err) {
      journal.abandon();
      await Deno.remove(journalPath).catch(() => {});
      throw err;
    }
    this.options.onPoint?.("journal-synced");
    await this.#save({
      ...state,
      pending: { cycle: begin.cycle, journalBytes: journal.bytes, bytes: received.bytes },
      ...counted(state, received),
    });
    this.options.onPoint?.("journal-committed");
    await this.#apply((await this.state(name))!, begin.cycle, journal.bytes);
  }

  /**
   * Failback resync: the sender sends only the blocks that differ from this
   * image (it compared hashes, see {@link hashes}). The target is the fenced
   * original primary's own disk; from the first byte on it is no longer a
   * consistent primary, so its role becomes replica/resyncing, then
   * replica/replicating of the new seed once the batch is applied.
   */
  async #receiveResync(
    name: string,
    state: ReplicaState | null,
    begin: BeginMessage,
    input: BatchInput,
  ): Promise<ConfirmMessage> {
    const role = await loadRole(this.dir, name, "replica");
    checkStep(role, "resync");
    const target = this.#resyncTarget(role, state);
    await this.#closeImage(name);
    const fresh: ReplicaState = {
      name,
      format: target.format,
      size: begin.size,
      seedId: begin.seedId,
      ...(target.image ? { image: target.image } : {}),
      updatedAt: new Date().toISOString(),
      bytesReceived: 0,
    };
    const image = await this.#image(fresh);
    if (image.size !== begin.size) {
      throw new ChainError(
        `disk ${name} here is ${image.size} bytes, the sender's ${begin.size}: resync needs equal sizes`,
      );
    }
    await saveRole(this.dir, applyStep(role, "resync"));
    await this.#save(fresh);
    await this.#journalAndApply(fresh, begin, input);
    await saveRole(this.dir, {
      ...applyStep(role, "resync"),
      state: "replicating",
      seedId: begin.seedId,
      cycle: 0,
    });
    return { type: "confirm", seedId: begin.seedId, cycle: 0 };
  }

  /** The image a resync writes: the fenced primary's disk, else this directory's. */
  #resyncTarget(
    role: DiskRole,
    state: ReplicaState | null,
  ): { image?: string; format: ReplicaFormat } {
    if (role.image) return { image: role.image, format: role.format ?? "qcow2" };
    if (state) return { ...(state.image ? { image: state.image } : {}), format: state.format };
    return { format: this.options.format };
  }

  /**
   * xxHash64 of every `blockSize` block of disk `name` (a fenced primary's own
   * disk, or the replica), in messages of at most 65536 hashes, read through a
   * read-only qemu-nbd; then where the disk's divergent blocks were kept. A
   * fenced primary's disk is still its own: what it wrote after the last cycle
   * it sent is kept aside (aside.ts) before any resync can overwrite it, and
   * the role records where. Once a resync began, the aside stays as it is.
   */
  async *hashes(name: string, blockSize: number): AsyncGenerator<HashesMessage | KeptMessage> {
    const role = await loadRole(this.dir, name, "replica");
    const state = await this.state(name);
    const target = this.#resyncTarget(role, state);
    const path = target.image ?? this.#path(name, target.format);
    await this.#closeImage(name);
    const served = await serveImage(path, { format: target.format, readOnly: true });
    let aside: DivergentBlocks | undefined;
    let kept: Kept = { ...(role.aside ? { path: role.aside } : {}), bytes: 0, whole: false };
    try {
      const source = await NbdSource.open(served.uri, { read: { requestSize: 1 << 20 } });
      try {
        if (role.role === "primary" && role.state === "fenced") {
          aside = await DivergentBlocks.open(
            this.dir,
            name,
            { path, format: target.format, size: source.size },
            role,
            blockSize,
          );
        }
        const per = 65536;
        let batch = new BigUint64Array(per);
        let first = 0;
        let n = 0;
        for await (const chunk of source.readExtents([{ offset: 0, length: source.size }])) {
          for (let at = 0; at < chunk.data.length; at += blockSize) {
            const block = chunk.data.subarray(at, Math.min(at + blockSize, chunk.data.length));
            const hash = xxh64(block);
            await aside?.block(first + n, block, hash);
            batch[n++] = hash;
            if (n === per) {
              yield { type: "hashes", first, hashes: batch };
              first += n;
              n = 0;
              batch = new BigUint64Array(per);
            }
          }
        }
        if (n > 0) yield { type: "hashes", first, hashes: batch.subarray(0, n) };
        if (aside) {
          kept = await aside.finish();
          aside = undefined;
          const { aside: _old, ...rest } = role;
          await saveRole(this.dir, { ...rest, ...(kept.path ? { aside: kept.path } : {}) });
        }
      } finally {
        await aside?.abandon();
        await source.close();
      }
    } finally {
      await served.close();
    }
    yield {
      type: "kept",
      name,
      ...kept,
      ...(kept.extents && role.cycle !== undefined ? { cycle: role.cycle } : {}),
    };
  }

  /**
   * Failback exec, at the original primary: replica `name`, which must be at
   * exactly the sender's last cycle, becomes the primary again. Its qcow2
   * gets a fresh pair of the sender's checkpoint bitmaps (recording from the
   * moment its VM starts), so `reprotect` needs no full copy.
   */
  async promote(msg: RoleMessage): Promise<DiskRole> {
    const role = await loadRole(this.dir, msg.name, "replica");
    // A rerun of a failback exec whose sender died after this promotion.
    if (role.step === "promote" && role.seedId === msg.seedId && role.cycle === msg.cycle) {
      return role;
    }
    checkStep(role, "promote");
    const state = await this.#atPoint(msg);
    await this.#closeImage(msg.name);
    const image = state.image ?? this.#path(msg.name, state.format);
    const checkpoint = state.format === "qcow2" && role.node
      ? await addImageCheckpoint(
        image,
        role.node,
        `${Date.now().toString(36)}-${crypto.randomUUID().slice(0, 8)}`,
      )
      : undefined;
    const promoted = applyStep(role, "promote", {
      seedId: msg.seedId,
      cycle: msg.cycle,
      image,
      format: state.format,
      ...(checkpoint ? { checkpoint } : {}),
    });
    await saveRole(this.dir, promoted);
    return promoted;
  }

  /**
   * Reprotect, at the side that becomes the replica: its image must equal the
   * sender's at `seedId`/`cycle` (a fenced replica after failback exec, or a
   * replica whose failover was cancelled); it takes cycles of that seed again.
   */
  async reprotect(msg: RoleMessage): Promise<DiskRole> {
    const role = await loadRole(this.dir, msg.name, "replica");
    checkStep(role, "reprotect_target");
    const state = await this.state(msg.name);
    if (!state) throw new ChainError(`there is no replica ${msg.name} here: seed it`);
    const at = role.state === "fenced"
      ? { seedId: role.seedId, cycle: role.cycle }
      : { seedId: state.seedId, cycle: state.cycle };
    if (at.seedId !== msg.seedId || at.cycle !== msg.cycle || state.pending) {
      throw new ChainError(
        `replica ${msg.name} is at ${at.seedId}/${at.cycle}, the sender at ${msg.seedId}/${msg.cycle}: ` +
          `the sides share no confirmed cycle, seed again`,
      );
    }
    const { seedOffset: _s, pending: _p, ...rest } = state;
    await this.#save({ ...rest, seedId: msg.seedId, cycle: msg.cycle });
    const next = applyStep(role, "reprotect_target", { seedId: msg.seedId, cycle: msg.cycle });
    await saveRole(this.dir, next);
    return next;
  }

  /**
   * Failover pre, at the DR site: the source is fenced at `seedId`/`cycle`,
   * which must be this replica's last applied cycle; `failover exec` then
   * promotes without `--force`.
   */
  async sourceFenced(msg: RoleMessage): Promise<DiskRole> {
    const role = await loadRole(this.dir, msg.name, "replica");
    await this.#atPoint(msg);
    const next = applyStep(role, "source_fenced", { seedId: msg.seedId, cycle: msg.cycle });
    await saveRole(this.dir, next);
    return next;
  }

  /** The replica's state, checked to be exactly at the message's seed and cycle. */
  async #atPoint(msg: RoleMessage): Promise<ReplicaState> {
    const state = await this.state(msg.name);
    if (
      !state || state.seedId !== msg.seedId || state.cycle !== msg.cycle || state.pending
    ) {
      throw new ChainError(
        `replica ${msg.name} is not at ${msg.seedId}/${msg.cycle}: run the final cycle first`,
      );
    }
    return state;
  }

  async #receiveSeed(
    name: string,
    state: ReplicaState | null,
    begin: BeginMessage,
    input: BatchInput,
  ): Promise<ConfirmMessage> {
    if (begin.seedEnd === undefined || begin.seedEnd > begin.size) {
      throw new InputError(`seed batch for ${name} has no valid seedEnd`);
    }
    if (state && state.seedId === begin.seedId && state.cycle !== undefined) {
      throw new ChainError(`replica ${name} is already seeded: push cycles instead`);
    }
    if (!state || state.seedId !== begin.seedId) {
      // A new seed replaces whatever was there: the old replica is not a copy
      // of this source any more.
      await this.#closeImage(name);
      await Deno.remove(this.#path(name, "journal")).catch(() => {});
      for (const ext of ["qcow2", "raw"]) await Deno.remove(this.#path(name, ext)).catch(() => {});
      await createReplicaImage(
        this.#path(name, this.options.format),
        this.options.format,
        begin.size,
      );
      state = {
        name,
        format: this.options.format,
        size: begin.size,
        seedId: begin.seedId,
        seedOffset: 0,
        updatedAt: new Date().toISOString(),
        bytesReceived: 0,
      };
      await this.#save(state);
    }
    const image = await this.#image(state);
    const received = await this.#collect(begin, input, async (msg, index) => {
      await this.#write(image, msg);
      if (index === 8) this.options.onPoint?.("seed-midway");
    });
    await image.flush();
    const seedOffset = Math.max(state.seedOffset ?? 0, begin.seedEnd);
    const done = seedOffset >= state.size;
    const { seedOffset: _old, ...rest } = state;
    await this.#save({
      ...rest,
      ...(done ? { cycle: 0, appliedAt: new Date().toISOString() } : { seedOffset }),
      ...counted(state, received),
    });
    return {
      type: "confirm",
      seedId: begin.seedId,
      cycle: 0,
      ...(done ? {} : { seedOffset }),
    };
  }

  /**
   * Reads records up to `end`, checks each (range, decodable payload) and
   * hands it on; checks `end`'s counts. Returns the payload bytes received,
   * the bytes of disk the records cover and the bytes they took on the wire.
   */
  async #collect(
    begin: BeginMessage,
    input: BatchInput,
    each: (msg: DataMessage | ZeroMessage, index: number) => Promise<void>,
  ): Promise<Received> {
    const wireBefore = input.wireBytes();
    let payloadBytes = 0;
    let records = 0;
    let bytes = 0;
    for (;;) {
      const msg = await input.next();
      if (msg.type === "end") {
        if (msg.records !== records || msg.bytes !== bytes) {
          throw new InputError(
            `batch ended after ${records} records of ${bytes} bytes, the sender says ${msg.records} of ${msg.bytes}`,
          );
        }
        return { payloadBytes, bytes, wireBytes: input.wireBytes() - wireBefore };
      }
      if (msg.type !== "data" && msg.type !== "zero") {
        throw new InputError(`replication protocol error: ${msg.type} inside a batch`);
      }
      if (msg.offset + msg.length > begin.size) {
        throw new InputError(
          `record ${msg.offset}+${msg.length} is beyond the disk size ${begin.size}`,
        );
      }
      if (msg.type === "data" && msg.codec === "zstd") {
        zstdDecompressExact(msg.payload, msg.length, `record at ${msg.offset}`);
      }
      await each(msg, records);
      if (msg.type === "data") payloadBytes += msg.payload.length;
      records++;
      bytes += msg.length;
    }
  }

  async #apply(state: ReplicaState, cycle: number, journalBytes: number): Promise<void> {
    const journalPath = this.#path(state.name, "journal");
    const image = await this.#image(state);
    let index = 0;
    for await (const msg of readJournal(journalPath, journalBytes)) {
      if (msg.type === "data" || msg.type === "zero") {
        await this.#write(image, msg);
        if (++index === 8) this.options.onPoint?.("apply-midway");
      }
    }
    await image.flush();
    const { pending: done, ...rest } = state;
    const totals = state.totals ?? NO_TOTALS;
    await this.#save({
      ...rest,
      cycle,
      appliedAt: new Date().toISOString(),
      // A failback resync is the new seed (cycle 0), no cycle after it.
      totals: { ...totals, cycles: totals.cycles + (cycle > 0 ? 1 : 0) },
      ...(done?.bytes === undefined ? {} : { lastCycleBytes: done.bytes }),
    });
    await Deno.remove(journalPath);
  }

  async #write(image: ReplicaImage, msg: DataMessage | ZeroMessage): Promise<void> {
    if (msg.type === "zero") return await image.writeZero(msg.offset, msg.length);
    const data = msg.codec === "zstd"
      ? zstdDecompressExact(msg.payload, msg.length, `record at ${msg.offset}`)
      : msg.payload;
    await image.writeData(msg.offset, data);
  }

  async #image(state: ReplicaState): Promise<ReplicaImage> {
    let image = this.#images.get(state.name);
    if (!image) {
      image = await openReplicaImage(
        state.image ?? this.#path(state.name, state.format),
        state.format,
      );
      this.#images.set(state.name, image);
    }
    return image;
  }

  async #save(state: ReplicaState): Promise<void> {
    await writeFileAtomic(
      this.#path(state.name, "state.json"),
      JSON.stringify({ ...state, updatedAt: new Date().toISOString() }, null, 2) + "\n",
    );
  }

  #path(name: string, ext: string): string {
    return join(this.dir, `${checkName(name)}.${ext}`);
  }
}
