/**
 * NBD client over libnbd (ffi/libnbd.ts): one connection to one export.
 *
 * - Data calls (`pread`, `pwrite`, `zero`, `trim`, `flush`) use libnbd's
 *   synchronous API declared `nonblocking`, so they run on a worker thread and
 *   the event loop keeps going. Calls on one connection serialise on libnbd's
 *   handle lock: use several clients for parallelism (see `reader.ts`).
 * - libnbd's error message is thread-local, so a failed nonblocking call is
 *   repeated synchronously to read it (failures are rare; all these requests
 *   are idempotent). If the repeat succeeds, the call succeeds.
 * - `blockStatus` is synchronous on the JS thread: measured here, a 2 GiB
 *   request answered with 16 384 extents per context takes 2–4 ms, and the
 *   nonblocking + thread-safe-callback variant was no faster (docs/qemu-nbd.md
 *   §2) while it would deadlock with any synchronous call made on the same
 *   handle during it.
 *
 * @module
 */
import { lastError, NbdHandle } from "../../ffi/libnbd.ts";
import { SourceError } from "../core/errors.ts";

/** A request the server refused; `errno` is its NBD error (ENOSPC, EIO... as on Linux). */
export class NbdRequestError extends SourceError {
  constructor(message: string, readonly detail: string, readonly errno: number) {
    super(message);
  }
}

/** One block-status extent of one meta context. */
export interface BlockStatusEntry {
  offset: number;
  length: number;
  flags: number;
}

export interface NbdConnectOptions {
  /** `nbd+unix:///EXPORT?socket=PATH` or `nbd://HOST:PORT/EXPORT`. */
  uri: string;
  /** Meta contexts to negotiate, e.g. `base:allocation`, `qemu:dirty-bitmap:NAME`. */
  metaContexts?: string[];
}

/** Largest block-status request: libnbd 1.14 has 32-bit lengths (docs/qemu-nbd.md §2). */
export const MAX_BLOCK_STATUS = 2 ** 31 - 2 ** 20;
/** Largest zero/trim request sent in one piece. */
const MAX_ZERO = 2 ** 30;
/** A failed nonblocking connect is repeated synchronously for its message only if it failed this fast. */
const SYNC_RETRY_CONNECT_MS = 2000;

function newHandle(uri: string, metaContexts: string[]): NbdHandle {
  const h = NbdHandle.create();
  if (!h) throw new SourceError(`cannot connect to ${uri}: ${lastError().message}`);
  for (const ctx of metaContexts) {
    if (h.addMetaContext(ctx) === -1) {
      const msg = lastError().message;
      h.close();
      throw new SourceError(`cannot connect to ${uri}: ${msg}`);
    }
  }
  h.setPreadInitialize(false);
  return h;
}

export class NbdClient {
  readonly uri: string;
  /** Export size in bytes. */
  readonly size: number;
  /** The server allows several connections with consistent caches (NBD_FLAG_CAN_MULTI_CONN). */
  readonly canMultiConn: boolean;
  /** The export is read-only. */
  readonly readOnly: boolean;
  readonly #h: NbdHandle;
  readonly #contexts: Set<string>;
  readonly #inFlight = new Set<Promise<unknown>>();
  #closing: Promise<void> | undefined;

  private constructor(uri: string, h: NbdHandle, contexts: string[]) {
    this.uri = uri;
    this.#h = h;
    const size = h.getSize();
    if (size < 0) {
      const msg = lastError().message;
      h.close();
      throw new SourceError(`${uri}: ${msg}`);
    }
    this.size = size;
    this.canMultiConn = h.canMultiConn() === 1;
    this.readOnly = h.isReadOnly() === 1;
    this.#contexts = new Set(contexts.filter((c) => h.canMetaContext(c) === 1));
  }

  /** Connects (and negotiates the meta contexts). Failure: {@link SourceError} naming the URI. */
  static async connect(opts: NbdConnectOptions): Promise<NbdClient> {
    const { uri } = opts;
    const contexts = [...new Set(opts.metaContexts ?? [])];
    let h = newHandle(uri, contexts);
    const t0 = performance.now();
    if (await h.connectUriAsync(uri) === -1) {
      h.close();
      // The message stayed on libnbd's worker thread: repeat on this thread to read it.
      if (performance.now() - t0 > SYNC_RETRY_CONNECT_MS) {
        throw new SourceError(`cannot connect to ${uri}: connection failed or timed out`);
      }
      h = newHandle(uri, contexts);
      if (h.connectUri(uri) === -1) {
        const msg = lastError().message;
        h.close();
        throw new SourceError(`cannot connect to ${uri}: ${msg}`);
      }
    }
    return new NbdClient(uri, h, contexts);
  }

  /**
   * Opens `count` connections at once (each one's handshake is a few round
   * trips, which add up through an SSH tunnel when made one after another).
   * If any fails, the others are closed and the first failure is thrown.
   */
  static async connectMany(opts: NbdConnectOptions, count: number): Promise<NbdClient[]> {
    const settled = await Promise.allSettled(
      Array.from({ length: count }, () => NbdClient.connect(opts)),
    );
    const failed = settled.find((r) => r.status === "rejected");
    const clients = settled.flatMap((r) => r.status === "fulfilled" ? [r.value] : []);
    if (failed) {
      await Promise.all(clients.map((c) => c.close()));
      throw failed.reason;
    }
    return clients;
  }

  /** True when the meta context was requested at connect and the server offers it. */
  canMetaContext(name: string): boolean {
    return this.#contexts.has(name);
  }

  get closed(): boolean {
    return this.#closing !== undefined;
  }

  #checkOpen(): void {
    if (this.#closing) throw new SourceError(`NBD connection to ${this.uri} is closed`);
  }

  /** Runs a nonblocking call; on failure repeats it synchronously to get libnbd's message. */
  async #run(what: string, nb: () => Promise<number>, sync: () => number): Promise<void> {
    this.#checkOpen();
    const p = nb();
    this.#inFlight.add(p);
    let r: number;
    try {
      r = await p;
    } finally {
      this.#inFlight.delete(p);
    }
    if (r !== -1) return;
    if (this.#h.closed) throw new SourceError(`${this.uri}: ${what} failed (connection closed)`);
    if (sync() !== -1) return;
    const { message, errno } = lastError();
    throw new NbdRequestError(`${this.uri}: ${message} (${what})`, message, errno);
  }

  /**
   * Reads `buf.length` bytes at `offset` into `buf`. `buf` must not be touched
   * until the Promise settles (a worker thread writes into it).
   */
  pread(buffer: Uint8Array, offset: number): Promise<void> {
    if (buffer.length === 0) return Promise.resolve();
    const buf = buffer as Uint8Array<ArrayBuffer>;
    return this.#run(
      `read of ${buf.length} bytes at ${offset}`,
      () => this.#h.preadAsync(buf, offset),
      () => this.#h.pread(buf, offset),
    );
  }

  /** Writes all of `buf` at `offset`; `buf` must not change until the Promise settles. */
  pwrite(buffer: Uint8Array, offset: number): Promise<void> {
    if (buffer.length === 0) return Promise.resolve();
    const buf = buffer as Uint8Array<ArrayBuffer>;
    return this.#run(
      `write of ${buf.length} bytes at ${offset}`,
      () => this.#h.pwriteAsync(buf, offset),
      () => this.#h.pwrite(buf, offset),
    );
  }

  /** Writes zeros over `[offset, offset + length)`, punching holes where the server can. */
  async zero(offset: number, length: number): Promise<void> {
    for (let off = offset; off < offset + length; off += MAX_ZERO) {
      const n = Math.min(MAX_ZERO, offset + length - off);
      const flags = 0; // CMD_FLAG.NO_HOLE left unset: the server may punch holes
      await this.#run(
        `zero of ${n} bytes at ${off}`,
        () => this.#h.zeroAsync(n, off, flags),
        () => this.#h.zero(n, off, flags),
      );
    }
  }

  /** Discards `[offset, offset + length)` (contents become unspecified). */
  async trim(offset: number, length: number): Promise<void> {
    for (let off = offset; off < offset + length; off += MAX_ZERO) {
      const n = Math.min(MAX_ZERO, offset + length - off);
      await this.#run(
        `trim of ${n} bytes at ${off}`,
        () => this.#h.trimAsync(n, off),
        () => this.#h.trim(n, off),
      );
    }
  }

  /** Asks the server to make written data durable. */
  flush(): Promise<void> {
    return this.#run("flush", () => this.#h.flushAsync(), () => this.#h.flush());
  }

  /**
   * Block status of `context` over `[offset, offset + length)`: sorted extents
   * covering the whole range, adjacent extents with equal flags merged.
   * Requests go out in pieces < 2^32 bytes until the range is covered.
   */
  // deno-lint-ignore require-await
  async blockStatus(
    context: string,
    offset = 0,
    length: number = this.size - offset,
  ): Promise<BlockStatusEntry[]> {
    this.#checkOpen();
    if (!this.#contexts.has(context)) {
      throw new SourceError(
        `${this.uri}: the server does not offer meta context '${context}' (or it was not requested)`,
      );
    }
    const end = offset + length;
    if (offset < 0 || length < 0 || end > this.size) {
      throw new SourceError(
        `${this.uri}: block status range ${offset}+${length} is outside the export (size ${this.size})`,
      );
    }
    const out: BlockStatusEntry[] = [];
    let pos = offset;
    while (pos < end) {
      const count = Math.min(end - pos, MAX_BLOCK_STATUS);
      let next = pos;
      const r = this.#h.blockStatus(count, pos, (ctx, start, entries) => {
        if (ctx !== context) return;
        let o = start;
        for (let i = 0; i + 1 < entries.length && o < end; i += 2) {
          const len = Math.min(entries[i], end - o);
          const flags = entries[i + 1];
          if (len === 0) continue;
          if (o !== next) return; // unexpected gap or repeat: ignore the rest of this reply
          const last = out[out.length - 1];
          if (last && last.flags === flags && last.offset + last.length === o) last.length += len;
          else out.push({ offset: o, length: len, flags });
          o += len;
          next = o;
        }
      });
      if (r === -1) throw new SourceError(`${this.uri}: ${lastError().message} (block status)`);
      if (next <= pos) {
        throw new SourceError(
          `${this.uri}: server returned no block status for '${context}' at ${pos}`,
        );
      }
      pos = next;
    }
    return out;
  }

  /**
   * Waits for in-flight requests, disconnects and frees the handle.
   * Idempotent; never throws.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await Promise.allSettled([...this.#inFlight]);
      this.#h.shutdown();
      this.#h.close();
    })();
    return this.#closing;
  }
}
