/**
 * Applies backup streams to a restore target, one after another, enforcing the
 * chain rules. A sidecar file beside the target (`TARGET.dbit.json`) remembers
 * the last stream applied, so a chain can also be restored one stream per run
 * (one Bacula bpipe restore job per backup job). A full is written to a
 * temporary file and renamed into place only when complete; an incremental is
 * applied in place with the sidecar marking the target incomplete until the
 * stream's trailer has been verified and the data synced.
 *
 * @module
 */
import { CancelledError, ChainError, TargetError } from "../core/errors.ts";
import { untilAborted } from "../core/async.ts";
import { readJsonFile, writeFileAtomic } from "../core/atomic_file.ts";
import { StreamReader } from "../stream/reader.ts";
import { checkChainOrder } from "../stream/chain.ts";
import type { StreamHeader } from "../stream/format.ts";
import { formatFromPath, type RestoreFormat, type RestoreTarget } from "../targets/target.ts";
import { RawFileTarget } from "../targets/raw_target.ts";
import { NbdImageTarget } from "../targets/nbd_target.ts";

/** What the sidecar file records about a restore target. */
interface Sidecar extends AppliedState {
  format: RestoreFormat;
}

/** The outcome of applying one stream. */
export interface AppliedStream {
  backupId: string;
  level: string;
  disk: string;
  /** Bytes of data written (zero ranges not counted). */
  bytes: number;
}

/** Where to restore to. */
export interface RestoreTargetSpec {
  path: string;
  format?: RestoreFormat;
  /** Allow replacing an existing file that is not a dirtybit restore target. */
  force?: boolean;
  /**
   * Cancels the restore (SIGINT, SIGTERM): a full's `.partial` is removed, an
   * incremental's target stays marked incomplete; the apply throws a CancelledError.
   */
  signal?: AbortSignal;
  /** Called after each record applied, with the reader (its `position`: stream bytes read). */
  onProgress?: (reader: StreamReader) => void;
}

/** Restores streams into one target file. */
export class RestoreSession {
  readonly #path: string;
  readonly #format: RestoreFormat;
  readonly #force: boolean;
  readonly #signal: AbortSignal | undefined;
  readonly #onProgress: RestoreTargetSpec["onProgress"];

  private constructor(spec: RestoreTargetSpec, format: RestoreFormat) {
    this.#path = spec.path;
    this.#format = format;
    this.#force = spec.force ?? false;
    this.#signal = spec.signal;
    this.#onProgress = spec.onProgress;
  }

  /** Prepares a session; nothing is written before the first `apply`. */
  static open(spec: RestoreTargetSpec): Promise<RestoreSession> {
    return Promise.resolve(new RestoreSession(spec, spec.format ?? formatFromPath(spec.path)));
  }

  get #sidecarPath(): string {
    return `${this.#path}.dbit.json`;
  }

  /** Applies one stream on top of what the target holds; throws unless it was applied completely. */
  async apply(stream: ReadableStream<Uint8Array>, name?: string): Promise<AppliedStream> {
    return await this.applyReader(await StreamReader.open(stream, name));
  }

  /** Like {@link apply}, for a stream whose header was already read. */
  async applyReader(reader: StreamReader): Promise<AppliedStream> {
    const header = reader.header;
    const sidecar = await readJsonFile<Sidecar>(this.#sidecarPath);
    // A full replaces the target whole, so it is also the way out of an incomplete one.
    if (header.level === "full") {
      checkChainOrder(null, header);
      return await this.#applyFull(reader, header);
    }
    checkNextStream(this.#path, sidecar, header);
    if (sidecar!.format !== this.#format) {
      throw new ChainError(`${this.#path} is a ${sidecar!.format} target, not ${this.#format}`);
    }
    return await this.#applyInPlace(reader, header, sidecar!);
  }

  /** Nothing is held between streams; kept for symmetry with other sessions. */
  close(): Promise<void> {
    return Promise.resolve();
  }

  async #applyFull(reader: StreamReader, header: StreamHeader): Promise<AppliedStream> {
    await this.#refuseForeignFile();
    const partial = `${this.#path}.partial`;
    const target = this.#format === "qcow2"
      ? await NbdImageTarget.createQcow2(partial, header.virtualSize)
      : await RawFileTarget.create(partial, header.virtualSize);
    try {
      // A new image reads as zeros already: zero records need no writes.
      const bytes = await copyRecords(reader, target, {
        skipZeros: true,
        signal: this.#signal,
        onProgress: this.#onProgress,
      });
      await target.flush();
      await target.close();
      await Deno.remove(this.#sidecarPath).catch(() => {});
      await Deno.rename(partial, this.#path);
      await this.#saveSidecar({ format: this.#format, last: header });
      return summary(header, bytes);
    } catch (err) {
      await target.close().catch(() => {});
      await Deno.remove(partial).catch(() => {});
      throw err;
    }
  }

  async #applyInPlace(
    reader: StreamReader,
    header: StreamHeader,
    sidecar: Sidecar,
  ): Promise<AppliedStream> {
    const target = this.#format === "qcow2"
      ? await NbdImageTarget.open(this.#path, "qcow2")
      : await RawFileTarget.open(this.#path);
    try {
      if (target.size !== header.virtualSize) {
        throw new ChainError(
          `${this.#path} holds ${target.size} bytes but backup ${header.backupId} is of a ${header.virtualSize}-byte disk`,
        );
      }
      await this.#saveSidecar({ ...sidecar, applying: header.backupId });
      const bytes = await copyRecords(reader, target, {
        skipZeros: false,
        signal: this.#signal,
        onProgress: this.#onProgress,
      });
      await target.flush();
      await target.close();
      await this.#saveSidecar({ format: this.#format, last: header });
      return summary(header, bytes);
    } finally {
      await target.close().catch(() => {});
    }
  }

  async #refuseForeignFile(): Promise<void> {
    if (this.#force) return;
    const exists = await Deno.stat(this.#path).then(() => true, () => false);
    const ours = await Deno.stat(this.#sidecarPath).then(() => true, () => false);
    if (exists && !ours) {
      throw new TargetError((p) =>
        `${this.#path} exists and is not a dirtybit restore target: choose another ` +
        `${p("out")} or pass ${p("force")}`
      );
    }
  }

  #saveSidecar(sidecar: Sidecar): Promise<void> {
    return writeFileAtomic(this.#sidecarPath, JSON.stringify(sidecar, null, 2) + "\n");
  }
}

/** What a target remembers between streams: the last stream applied, and one being applied. */
export interface AppliedState {
  last: StreamHeader;
  applying?: string;
}

/**
 * Checks that the incremental or differential `header` may go on top of what
 * `target` holds (`state` null: nothing applied yet); throws ChainError naming it.
 */
export function checkNextStream(
  target: string,
  state: AppliedState | null,
  header: StreamHeader,
): void {
  if (state?.applying) {
    throw new ChainError(
      `${target} was left incomplete while applying backup ${state.applying}: restore the chain again from its full`,
    );
  }
  if (!state) {
    throw new ChainError(
      `${header.level} backup ${header.backupId} needs its parent ${header.parentId} applied to ${target} first: restore the full first`,
    );
  }
  checkChainOrder(state.last, header);
}

/**
 * Writes a stream's records to `target`; returns the data bytes written.
 * `signal` ends it with a CancelledError, also while a read or write blocks.
 */
export function copyRecords(
  reader: StreamReader,
  target: RestoreTarget,
  opts: CopyOptions,
): Promise<number> {
  const cancelled = () => new CancelledError("restore cancelled");
  return untilAborted(opts.signal, copyAll(reader, target, opts), cancelled);
}

/** How {@link copyRecords} copies. */
export interface CopyOptions {
  skipZeros: boolean;
  signal?: AbortSignal;
  onProgress?: (reader: StreamReader) => void;
}

async function copyAll(
  reader: StreamReader,
  target: RestoreTarget,
  opts: CopyOptions,
): Promise<number> {
  let bytes = 0;
  for await (const rec of reader.records()) {
    if (opts.signal?.aborted) break; // untilAborted has thrown already
    if (rec.kind === "data") {
      await target.writeData(rec.offset, rec.data);
      bytes += rec.data.length;
    } else if (!opts.skipZeros) {
      await target.writeZero(rec.offset, rec.length);
    }
    opts.onProgress?.(reader);
  }
  return bytes;
}

function summary(header: StreamHeader, bytes: number): AppliedStream {
  return { backupId: header.backupId, level: header.level, disk: header.disk, bytes };
}
