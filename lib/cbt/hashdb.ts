/**
 * The hash DB behind change-detection layer 2: one xxHash64 per block of a
 * disk, as the last committed backup saw it, in a memory-mapped flat file
 * (O(1) lookup, no scan, no index). A backup stages new hashes in a redo
 * journal beside the file; `commit` makes them the new state durably and
 * crash-safely, `discard` drops them.
 *
 * Files: `PATH` (header page + one u64 per block, native byte order) and
 * `PATH.journal` (staged ranges, then a commit record). A crash before the
 * journal's commit record is durable leaves the old state; after it, opening
 * the DB redoes the commit. While a commit is being applied the header says
 * "no backup" (id null), so a half-applied DB is never trusted.
 *
 * @module
 */
import { dirname } from "node:path";
import { Xxh64, xxh64 } from "@node-rs/xxhash";
import { MappedFile } from "../../ffi/libc.ts";
import { fileSystemError, SourceError } from "../core/errors.ts";

const DB_MAGIC = "DBHASHDB";
const JOURNAL_MAGIC = "DBHJRNL1";
const VERSION = 1;
/** Hashes start at this file offset (one page, so the hash array is aligned). */
const HEADER_SIZE = 4096;
const MAX_ID_BYTES = 256;
/** Header bytes covered by the header checksum (stored right after them). */
const HEADER_USED = 36 + MAX_ID_BYTES;
const ENTRY_SIZE = 24;
const COMMIT_MARK = 0xffff_ffff_ffff_ffffn;
const FLUSH_ENTRIES = 2730; // ~64 KiB of journal per write

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Disk geometry a hash DB is for. */
export interface HashDbGeometry {
  readonly blockSize: number;
  readonly diskSize: number;
}

interface Header extends HashDbGeometry {
  readonly blockCount: number;
  readonly id: string | null;
}

function blockCountOf(g: HashDbGeometry): number {
  return Math.ceil(g.diskSize / g.blockSize);
}

function encodeHeader(h: Header): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE);
  const view = new DataView(out.buffer);
  out.set(encoder.encode(DB_MAGIC), 0);
  view.setUint32(8, VERSION, true);
  view.setUint32(12, h.blockSize, true);
  view.setBigUint64(16, BigInt(h.diskSize), true);
  view.setBigUint64(24, BigInt(h.blockCount), true);
  const id = encoder.encode(h.id ?? "");
  view.setUint32(32, id.length, true);
  out.set(id, 36);
  view.setBigUint64(HEADER_USED, xxh64(out.subarray(0, HEADER_USED)), true);
  return out;
}

/** Parses a header page; null if it is not a valid version-1 header. */
function decodeHeader(page: Uint8Array): Header | null {
  if (page.length < HEADER_SIZE) return null;
  const view = new DataView(page.buffer, page.byteOffset, HEADER_SIZE);
  if (decoder.decode(page.subarray(0, 8)) !== DB_MAGIC) return null;
  if (view.getUint32(8, true) !== VERSION) return null;
  if (xxh64(page.subarray(0, HEADER_USED)) !== view.getBigUint64(HEADER_USED, true)) return null;
  const idLength = view.getUint32(32, true);
  if (idLength > MAX_ID_BYTES) return null;
  return {
    blockSize: view.getUint32(12, true),
    diskSize: Number(view.getBigUint64(16, true)),
    blockCount: Number(view.getBigUint64(24, true)),
    id: idLength ? decoder.decode(page.subarray(36, 36 + idLength)) : null,
  };
}

function syncDir(path: string): void {
  const dir = Deno.openSync(dirname(path), { read: true });
  try {
    dir.syncSync();
  } finally {
    dir.close();
  }
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** Creates an empty DB (id null, all hashes 0) atomically: temp file, fsync, rename. */
function createEmpty(path: string, g: HashDbGeometry): void {
  const tmp = `${path}.tmp`;
  try {
    const file = Deno.openSync(tmp, { write: true, create: true, truncate: true });
    try {
      const header = { ...g, blockCount: blockCountOf(g), id: null };
      file.writeSync(encodeHeader(header));
      file.truncateSync(HEADER_SIZE + header.blockCount * 8);
      file.syncSync();
    } finally {
      file.close();
    }
    Deno.renameSync(tmp, path);
  } catch (err) {
    try {
      Deno.removeSync(tmp);
    } catch {
      // not created
    }
    throw fileSystemError(err, "cannot create the hash database", path);
  }
  syncDir(path);
}

function readHeaderPage(path: string): { header: Header | null; size: number } {
  const file = Deno.openSync(path, { read: true });
  try {
    const page = new Uint8Array(HEADER_SIZE);
    let got = 0;
    while (got < HEADER_SIZE) {
      const n = file.readSync(page.subarray(got));
      if (n === null) break;
      got += n;
    }
    return { header: got === HEADER_SIZE ? decodeHeader(page) : null, size: file.statSync().size };
  } finally {
    file.close();
  }
}

/** A committed journal: its new id and how many entries it holds. */
interface CommittedJournal {
  readonly id: string;
  readonly entries: number;
}

/**
 * Checks a journal file: geometry, then a commit record at its end whose
 * checksums match. Null if it was never committed (or is damaged). Reads
 * the entries in chunks, so a large journal needs little memory.
 */
function readCommit(path: string, g: HashDbGeometry): CommittedJournal | null {
  const file = Deno.openSync(path, { read: true });
  try {
    const size = file.statSync().size;
    const readAt = (at: number, n: number) => {
      const out = new Uint8Array(n);
      file.seekSync(at, Deno.SeekMode.Start);
      readExact(file, out);
      return out;
    };
    if (size < 2 * ENTRY_SIZE + 12) return null;
    const head = readAt(0, ENTRY_SIZE);
    const hv = new DataView(head.buffer);
    if (decoder.decode(head.subarray(0, 8)) !== JOURNAL_MAGIC) return null;
    if (hv.getUint32(8, true) !== g.blockSize) return null;
    if (Number(hv.getBigUint64(16, true)) !== g.diskSize) return null;
    const tail = new DataView(readAt(size - 12, 12).buffer);
    const idLength = tail.getUint32(0, true);
    const commitAt = size - 12 - idLength - ENTRY_SIZE;
    if (idLength === 0 || idLength > MAX_ID_BYTES || commitAt < ENTRY_SIZE) return null;
    if ((commitAt - ENTRY_SIZE) % ENTRY_SIZE !== 0) return null;
    const commit = readAt(commitAt, size - commitAt);
    const cv = new DataView(commit.buffer);
    if (xxh64(commit.subarray(0, -8)) !== tail.getBigUint64(4, true)) return null;
    const entries = (commitAt - ENTRY_SIZE) / ENTRY_SIZE;
    if (cv.getBigUint64(0, true) !== COMMIT_MARK) return null;
    if (Number(cv.getBigUint64(8, true)) !== entries) return null;
    const body = new Xxh64();
    const chunk = new Uint8Array(FLUSH_ENTRIES * ENTRY_SIZE);
    file.seekSync(ENTRY_SIZE, Deno.SeekMode.Start);
    for (let left = commitAt - ENTRY_SIZE; left > 0;) {
      const part = chunk.subarray(0, Math.min(left, chunk.length));
      readExact(file, part);
      body.update(part);
      left -= part.length;
    }
    if (body.digest() !== cv.getBigUint64(16, true)) return null;
    return { id: decoder.decode(commit.subarray(ENTRY_SIZE, ENTRY_SIZE + idLength)), entries };
  } finally {
    file.close();
  }
}

/** Per-block hashes of the last committed backup of one disk. */
export class HashDb {
  readonly path: string;
  readonly blockSize: number;
  readonly diskSize: number;
  readonly blockCount: number;
  /**
   * Why the DB was found unusable and started afresh (corrupt header, other
   * disk geometry), for the job log; null if it was opened as it was.
   */
  readonly resetReason: string | null;
  #id: string | null;
  #map: MappedFile;
  #hashes: BigUint64Array;
  #journal: Deno.FsFile | null = null;
  #pending = new BigUint64Array(FLUSH_ENTRIES * 3);
  #pendingCount = 0;
  #entries = 0;
  #body = new Xxh64();

  private constructor(path: string, header: Header, resetReason: string | null) {
    this.path = path;
    this.blockSize = header.blockSize;
    this.diskSize = header.diskSize;
    this.blockCount = header.blockCount;
    this.resetReason = resetReason;
    this.#id = header.id;
    this.#map = MappedFile.open(path, HEADER_SIZE + header.blockCount * 8, true);
    this.#hashes = new BigUint64Array(this.#map.buffer, HEADER_SIZE, header.blockCount);
  }

  /**
   * Opens (or creates) the DB at `path` for a disk of this geometry. Finishes
   * a commit that a crash interrupted and drops uncommitted staging. A DB of
   * another geometry or with a corrupt header starts afresh (id null).
   */
  static open(path: string, geometry: HashDbGeometry): HashDb {
    const { blockSize, diskSize } = geometry;
    if (!(blockSize >= 512 && (blockSize & (blockSize - 1)) === 0)) {
      throw new RangeError(`hash DB block size ${blockSize} is not a power of two >= 512`);
    }
    if (!Number.isSafeInteger(diskSize) || diskSize < 0) {
      throw new RangeError(`hash DB disk size ${diskSize} is invalid`);
    }
    const journalPath = `${path}.journal`;
    try {
      let reason: string | null = null;
      if (!exists(path)) {
        createEmpty(path, geometry);
      } else {
        const { header, size } = readHeaderPage(path);
        if (!header || size !== HEADER_SIZE + header.blockCount * 8) {
          reason = `hash DB '${path}' was corrupt and starts afresh`;
        } else if (header.blockSize !== blockSize || header.diskSize !== diskSize) {
          reason = `hash DB '${path}' was for disk size ${header.diskSize} / block size ` +
            `${header.blockSize}, not ${diskSize} / ${blockSize}, and starts afresh`;
        }
        if (reason) {
          if (exists(journalPath)) Deno.removeSync(journalPath);
          createEmpty(path, geometry);
        }
      }
      const { header } = readHeaderPage(path);
      const db = new HashDb(path, header!, reason);
      db.#recover();
      return db;
    } catch (err) {
      if (err instanceof RangeError) throw err;
      throw fileSystemError(err, "cannot open the hash database", path);
    }
  }

  /** Id of the backup the committed hashes describe, or null (then never use it for L2). */
  get id(): string | null {
    return this.#id;
  }

  /** Committed hash of block `index` (0 when never written). O(1). */
  get(index: number): bigint {
    if (!(index >= 0 && index < this.blockCount)) {
      throw new RangeError(`block ${index} is outside the hash DB (${this.blockCount} blocks)`);
    }
    return this.#hashes[index];
  }

  /** Stages the hash of one block for the next commit; `get` is not affected. */
  stage(index: number, hash: bigint): void {
    this.stageRange(index, 1, hash);
  }

  /** Stages the same hash for `count` blocks from `first` (e.g. an unallocated range). */
  stageRange(first: number, count: number, hash: bigint): void {
    if (!(first >= 0 && count >= 0 && first + count <= this.blockCount)) {
      throw new RangeError(`blocks ${first}+${count} are outside the hash DB (${this.blockCount})`);
    }
    if (count === 0) return;
    const p = this.#pending;
    const last = (this.#pendingCount - 1) * 3;
    if (
      this.#pendingCount > 0 && p[last + 2] === hash &&
      p[last] + p[last + 1] === BigInt(first)
    ) {
      p[last + 1] += BigInt(count);
      return;
    }
    if (this.#pendingCount === FLUSH_ENTRIES) this.#flush();
    const at = this.#pendingCount++ * 3;
    p[at] = BigInt(first);
    p[at + 1] = BigInt(count);
    p[at + 2] = hash;
  }

  /**
   * Makes the staged hashes the committed state of backup `backupId`,
   * durably. Blocks not staged keep their hashes.
   */
  commit(backupId: string): void {
    const id = encoder.encode(backupId);
    if (id.length === 0 || id.length > MAX_ID_BYTES) {
      throw new RangeError(`backup id must be 1 to ${MAX_ID_BYTES} bytes`);
    }
    const journalPath = `${this.path}.journal`;
    try {
      this.#flush();
      const journal = this.#journal!;
      this.#journal = null;
      // Commit record: MARK, entry count, entry checksum, id, id length, checksum of all that.
      const commit = new Uint8Array(ENTRY_SIZE + id.length + 12);
      const view = new DataView(commit.buffer);
      view.setBigUint64(0, COMMIT_MARK, true);
      view.setBigUint64(8, BigInt(this.#entries), true);
      view.setBigUint64(16, this.#body.digest(), true);
      commit.set(id, ENTRY_SIZE);
      view.setUint32(ENTRY_SIZE + id.length, id.length, true);
      view.setBigUint64(commit.length - 8, xxh64(commit.subarray(0, -8)), true);
      writeAll(journal, commit);
      journal.syncSync();
      journal.close();
      syncDir(journalPath);
      const entries = this.#entries;
      this.#entries = 0;
      this.#body = new Xxh64();
      this.#apply({ id: backupId, entries });
    } catch (err) {
      if (err instanceof RangeError) throw err;
      throw fileSystemError(err, "cannot commit the hash database", this.path);
    }
  }

  /** Drops everything staged since the last commit. */
  discard(): void {
    this.#pendingCount = 0;
    this.#entries = 0;
    this.#body = new Xxh64();
    if (this.#journal) {
      this.#journal.close();
      this.#journal = null;
    }
    const journalPath = `${this.path}.journal`;
    if (exists(journalPath)) Deno.removeSync(journalPath);
  }

  /** Drops uncommitted staging and unmaps the file. Safe to call twice. */
  close(): void {
    if (this.#journal || this.#pendingCount) this.discard();
    this.#hashes = new BigUint64Array(0);
    this.#map.close();
  }

  /** Writes buffered staged entries to the journal, creating it first if needed. */
  #flush(): void {
    if (!this.#journal) {
      const journalPath = `${this.path}.journal`;
      this.#journal = Deno.openSync(journalPath, { write: true, create: true, truncate: true });
      const head = new Uint8Array(ENTRY_SIZE);
      const view = new DataView(head.buffer);
      head.set(encoder.encode(JOURNAL_MAGIC), 0);
      view.setUint32(8, this.blockSize, true);
      view.setBigUint64(16, BigInt(this.diskSize), true);
      writeAll(this.#journal, head);
    }
    if (this.#pendingCount === 0) return;
    const bytes = littleEndian(
      new Uint8Array(this.#pending.buffer, 0, this.#pendingCount * ENTRY_SIZE),
    );
    this.#body.update(bytes);
    writeAll(this.#journal, bytes);
    this.#entries += this.#pendingCount;
    this.#pendingCount = 0;
  }

  /** On open: redo a committed journal, drop an uncommitted one. */
  #recover(): void {
    const journalPath = `${this.path}.journal`;
    if (!exists(journalPath)) return;
    const committed = readCommit(journalPath, this);
    if (committed) this.#apply(committed);
    else {
      Deno.removeSync(journalPath);
      syncDir(journalPath);
    }
  }

  /**
   * Applies a committed journal: header to "no backup", hashes, msync, header
   * to the new id, msync, journal removed. Idempotent, so a crash anywhere
   * in here is repaired by doing it again.
   */
  #apply(commit: CommittedJournal): void {
    const journalPath = `${this.path}.journal`;
    const headerBytes = new Uint8Array(this.#map.buffer, 0, HEADER_SIZE);
    const geometry = { blockSize: this.blockSize, diskSize: this.diskSize };
    headerBytes.set(encodeHeader({ ...geometry, blockCount: this.blockCount, id: null }));
    this.#map.sync(0, HEADER_SIZE);
    this.#id = null;
    const file = Deno.openSync(journalPath, { read: true });
    try {
      const chunk = new Uint8Array(FLUSH_ENTRIES * ENTRY_SIZE);
      let remaining = commit.entries;
      file.seekSync(ENTRY_SIZE, Deno.SeekMode.Start);
      while (remaining > 0) {
        const n = Math.min(remaining, FLUSH_ENTRIES);
        readExact(file, chunk.subarray(0, n * ENTRY_SIZE));
        const view = new DataView(chunk.buffer);
        for (let i = 0; i < n; i++) {
          const first = Number(view.getBigUint64(i * ENTRY_SIZE, true));
          const count = Number(view.getBigUint64(i * ENTRY_SIZE + 8, true));
          const hash = view.getBigUint64(i * ENTRY_SIZE + 16, true);
          if (first + count > this.blockCount) {
            throw new SourceError(
              `hash DB journal '${journalPath}' names blocks past the disk end`,
            );
          }
          this.#hashes.fill(hash, first, first + count);
        }
        remaining -= n;
      }
    } finally {
      file.close();
    }
    this.#map.sync();
    headerBytes.set(encodeHeader({ ...geometry, blockCount: this.blockCount, id: commit.id }));
    this.#map.sync(0, HEADER_SIZE);
    this.#id = commit.id;
    Deno.removeSync(journalPath);
    syncDir(journalPath);
  }
}

/** The staging buffer holds native u64s; the journal is little-endian. */
function littleEndian(bytes: Uint8Array): Uint8Array {
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] === 1) return bytes;
  const out = new Uint8Array(bytes.length);
  const view = new DataView(out.buffer);
  const src = new BigUint64Array(bytes.buffer, bytes.byteOffset, bytes.length / 8);
  src.forEach((v, i) => view.setBigUint64(i * 8, v, true));
  return out;
}

function writeAll(file: Deno.FsFile, bytes: Uint8Array): void {
  for (let at = 0; at < bytes.length;) at += file.writeSync(bytes.subarray(at));
}

function readExact(file: Deno.FsFile, into: Uint8Array): void {
  for (let at = 0; at < into.length;) {
    const n = file.readSync(into.subarray(at));
    if (n === null) throw new SourceError("hash DB journal ended early");
    at += n;
  }
}
