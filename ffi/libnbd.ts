/**
 * Deno FFI bindings to libnbd (`libnbd.so.0`, Debian package libnbd0, API of
 * libnbd 1.14). This file and the rest of `ffi/` are the only places in
 * dirtybit that touch pointers: everything above sees an {@link NbdHandle}
 * whose methods take and return numbers, strings and `Uint8Array`s.
 *
 * Policy (error types, retries, splitting requests) lives in `lib/nbd/`.
 * Methods here return libnbd's raw status (`-1` = error) and never throw for
 * a libnbd failure; the message is in {@link lastError}.
 *
 * Facts this is built on (docs/qemu-nbd.md §2):
 * - `nbd_block_status` takes its extent callback as a struct **by value**
 *   (`{callback, user_data, free}`, 24 bytes); `entries` are (length, flags)
 *   pairs valid only during the callback.
 * - A second declaration of the same C function with `nonblocking: true` runs
 *   it on a blocking worker thread and returns a Promise. The buffer passed to
 *   such a call must stay alive and untouched until the Promise settles.
 * - libnbd's error (`nbd_get_error`/`nbd_get_errno`) is **thread-local**: after
 *   a nonblocking call failed, the main thread cannot see its message. Callers
 *   re-issue the request with the synchronous variant to obtain it (see
 *   `lib/nbd/client.ts`).
 * - Calls on one handle serialise on libnbd's handle lock.
 *
 * @module
 */
import { DependencyError } from "../lib/core/errors.ts";

/** `LIBNBD_CMD_FLAG_*`. */
export const CMD_FLAG = {
  FUA: 0x01,
  /** For nbd_zero: must not punch holes. dirtybit leaves it unset. */
  NO_HOLE: 0x02,
  DF: 0x04,
  REQ_ONE: 0x08,
  FAST_ZERO: 0x10,
} as const;

/** `LIBNBD_SHUTDOWN_ABANDON_PENDING`. */
export const SHUTDOWN_ABANDON_PENDING = 0x10000;

/** base:allocation flags (`LIBNBD_STATE_*`). */
export const STATE_HOLE = 1;
export const STATE_ZERO = 2;
/** qemu:dirty-bitmap:NAME flag: the range is dirty. */
export const STATE_DIRTY = 1;

/** Name of the shared object that is loaded. */
export const LIBNBD_SONAME = "libnbd.so.0";

const EXTENT_CALLBACK_STRUCT = { struct: ["pointer", "pointer", "pointer"] } as const;

const H = "pointer" as const;
/** The blocking calls; see {@link SYMBOLS} for their nonblocking twins. */
const BLOCKING = {
  nbd_create: { parameters: [], result: "pointer" },
  nbd_close: { parameters: [H], result: "void" },
  nbd_get_error: { parameters: [], result: "pointer" },
  nbd_get_errno: { parameters: [], result: "i32" },
  nbd_set_export_name: { parameters: [H, "buffer"], result: "i32" },
  nbd_add_meta_context: { parameters: [H, "buffer"], result: "i32" },
  nbd_set_pread_initialize: { parameters: [H, "bool"], result: "i32" },
  nbd_connect_uri: { parameters: [H, "buffer"], result: "i32" },
  nbd_connect_unix: { parameters: [H, "buffer"], result: "i32" },
  nbd_connect_tcp: { parameters: [H, "buffer", "buffer"], result: "i32" },
  nbd_can_meta_context: { parameters: [H, "buffer"], result: "i32" },
  nbd_get_size: { parameters: [H], result: "i64" },
  nbd_can_multi_conn: { parameters: [H], result: "i32" },
  nbd_is_read_only: { parameters: [H], result: "i32" },
  nbd_can_flush: { parameters: [H], result: "i32" },
  nbd_can_zero: { parameters: [H], result: "i32" },
  nbd_can_trim: { parameters: [H], result: "i32" },
  nbd_pread: { parameters: [H, "buffer", "usize", "u64", "u32"], result: "i32" },
  nbd_pwrite: { parameters: [H, "buffer", "usize", "u64", "u32"], result: "i32" },
  nbd_flush: { parameters: [H, "u32"], result: "i32" },
  nbd_zero: { parameters: [H, "u64", "u64", "u32"], result: "i32" },
  nbd_trim: { parameters: [H, "u64", "u64", "u32"], result: "i32" },
  nbd_block_status: {
    parameters: [H, "u64", "u64", EXTENT_CALLBACK_STRUCT, "u32"],
    result: "i32",
  },
  nbd_shutdown: { parameters: [H, "u32"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** `def` run on a libnbd thread (`nonblocking`), so that JS can await it. */
function nonblocking<
  N extends string,
  P extends readonly Deno.NativeType[],
  R extends Deno.NativeResultType,
>(
  name: N,
  def: { parameters: P; result: R },
): { name: N; parameters: P; result: R; nonblocking: true } {
  return { name, ...def, nonblocking: true };
}

const SYMBOLS = {
  ...BLOCKING,
  nbd_connect_uri_nb: nonblocking("nbd_connect_uri", BLOCKING.nbd_connect_uri),
  nbd_pread_nb: nonblocking("nbd_pread", BLOCKING.nbd_pread),
  nbd_pwrite_nb: nonblocking("nbd_pwrite", BLOCKING.nbd_pwrite),
  nbd_flush_nb: nonblocking("nbd_flush", BLOCKING.nbd_flush),
  nbd_zero_nb: nonblocking("nbd_zero", BLOCKING.nbd_zero),
  nbd_trim_nb: nonblocking("nbd_trim", BLOCKING.nbd_trim),
  nbd_block_status_nb: nonblocking("nbd_block_status", BLOCKING.nbd_block_status),
} as const satisfies Deno.ForeignLibraryInterface;

/** `int (*)(void *user_data, const char *metacontext, uint64_t offset, uint32_t *entries, size_t nr_entries, int *error)` */
const EXTENT_CALLBACK_DEF = {
  parameters: ["pointer", "pointer", "u64", "pointer", "usize", "pointer"],
  result: "i32",
} as const satisfies Deno.UnsafeCallbackDefinition;

type Symbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];
let loaded: Symbols | undefined;

/**
 * Loads libnbd once. Throws {@link DependencyError} when the library (or a
 * symbol of the 1.14 API) is missing.
 */
export function libnbd(): Symbols {
  loaded ??= openLibnbd(LIBNBD_SONAME);
  return loaded;
}

/** dlopen of `soname` with dirtybit's symbol table (exported for tests of the missing case). */
export function openLibnbd(soname: string): Symbols {
  try {
    return Deno.dlopen(soname, SYMBOLS).symbols;
  } catch (err) {
    const detail = err instanceof Error ? err.message.split("\n")[0] : String(err);
    throw new DependencyError(
      `${soname} not found: install the Debian package libnbd0 (${detail})`,
      { cause: err },
    );
  }
}

/** True when libnbd can be loaded on this machine. */
export function libnbdAvailable(): boolean {
  try {
    libnbd();
    return true;
  } catch {
    return false;
  }
}

/** libnbd's last error **on the calling thread** (the JS main thread). */
export function lastError(): { message: string; errno: number } {
  const lib = libnbd();
  const p = lib.nbd_get_error();
  const message = p === null ? "unknown libnbd error" : Deno.UnsafePointerView.getCString(p);
  return { message, errno: lib.nbd_get_errno() };
}

const encoder = new TextEncoder();
function cstr(s: string): Uint8Array<ArrayBuffer> {
  if (s.includes("\0")) throw new TypeError("string for libnbd contains a NUL byte");
  return encoder.encode(s + "\0");
}

/** Holds a reference to `_ref` until a nonblocking call settled, then passes `r` on. */
function keepAlive<T>(_ref: unknown, r: T): T {
  return r;
}

function num(v: number | bigint): number {
  return typeof v === "bigint" ? Number(v) : v;
}

/** Receives one reply of `nbd_block_status` for one meta context. */
export type ExtentSink = (context: string, offset: number, entries: Uint32Array) => void;

/** Reads the callback arguments into JS values (the C memory is valid only during the call). */
function readExtents(
  sink: ExtentSink,
  metacontext: Deno.PointerValue,
  offset: number | bigint,
  entries: Deno.PointerValue,
  nrEntries: number | bigint,
): void {
  const context = metacontext === null ? "" : Deno.UnsafePointerView.getCString(metacontext);
  const n = num(nrEntries);
  const copy = new Uint32Array(n);
  if (n > 0 && entries !== null) {
    copy.set(new Uint32Array(Deno.UnsafePointerView.getArrayBuffer(entries, n * 4)));
  }
  sink(context, num(offset), copy);
}

/**
 * The body of an extent callback feeding `sink`. An exception must not
 * unwind into libnbd, so the callback keeps the first one and `check`
 * rethrows it once the libnbd call has returned (else returns its result).
 */
function extentCallback(sink: ExtentSink): {
  fn: Deno.UnsafeCallbackFunction<
    typeof EXTENT_CALLBACK_DEF.parameters,
    typeof EXTENT_CALLBACK_DEF.result
  >;
  check<T>(result: T): T;
} {
  let thrown: unknown;
  return {
    fn: (_ud, ctx, off, ents, n, _err) => {
      try {
        readExtents(sink, ctx, off, ents, n);
      } catch (e) {
        thrown ??= e;
      }
      return 0;
    },
    check(result) {
      if (thrown !== undefined) throw thrown;
      return result;
    },
  };
}

/** The 24-byte `nbd_extent_callback` struct: { callback, user_data = NULL, free = NULL }. */
function extentCallbackStruct(cb: { pointer: Deno.PointerObject }): Uint8Array<ArrayBuffer> {
  const s = new BigUint64Array(3);
  s[0] = BigInt(Deno.UnsafePointer.value(cb.pointer));
  return new Uint8Array(s.buffer);
}

/**
 * One libnbd handle (`struct nbd_handle *`). Not thread-safe from JS's point of
 * view beyond what libnbd guarantees: calls serialise on the handle lock.
 * {@link close} must only be called when no nonblocking call is in flight.
 */
export class NbdHandle {
  #h: Deno.PointerObject | null;
  readonly #lib: Symbols;

  private constructor(lib: Symbols, h: Deno.PointerObject) {
    this.#lib = lib;
    this.#h = h;
  }

  /** `nbd_create`; returns null on failure (see {@link lastError}). */
  static create(): NbdHandle | null {
    const lib = libnbd();
    const h = lib.nbd_create();
    return h === null ? null : new NbdHandle(lib, h);
  }

  get closed(): boolean {
    return this.#h === null;
  }

  #ptr(): Deno.PointerObject {
    if (this.#h === null) throw new Error("libnbd handle used after close");
    return this.#h;
  }

  /** `nbd_close`. Idempotent. */
  close(): void {
    if (this.#h !== null) {
      this.#lib.nbd_close(this.#h);
      this.#h = null;
    }
  }

  setExportName(name: string): number {
    return this.#lib.nbd_set_export_name(this.#ptr(), cstr(name));
  }
  addMetaContext(name: string): number {
    return this.#lib.nbd_add_meta_context(this.#ptr(), cstr(name));
  }
  /** `nbd_set_pread_initialize(h, request)`: false skips zeroing read buffers. */
  setPreadInitialize(request: boolean): number {
    return this.#lib.nbd_set_pread_initialize(this.#ptr(), request);
  }
  connectUri(uri: string): number {
    return this.#lib.nbd_connect_uri(this.#ptr(), cstr(uri));
  }
  /** Nonblocking `nbd_connect_uri` (the error message stays on the worker thread). */
  connectUriAsync(uri: string): Promise<number> {
    const s = cstr(uri);
    return this.#lib.nbd_connect_uri_nb(this.#ptr(), s).then((r) => keepAlive(s, r));
  }
  connectUnix(path: string): number {
    return this.#lib.nbd_connect_unix(this.#ptr(), cstr(path));
  }
  connectTcp(host: string, port: string): number {
    return this.#lib.nbd_connect_tcp(this.#ptr(), cstr(host), cstr(port));
  }
  canMetaContext(name: string): number {
    return this.#lib.nbd_can_meta_context(this.#ptr(), cstr(name));
  }
  /** `nbd_get_size`: bytes, or -1. */
  getSize(): number {
    return num(this.#lib.nbd_get_size(this.#ptr()));
  }
  canMultiConn(): number {
    return this.#lib.nbd_can_multi_conn(this.#ptr());
  }
  isReadOnly(): number {
    return this.#lib.nbd_is_read_only(this.#ptr());
  }
  canFlush(): number {
    return this.#lib.nbd_can_flush(this.#ptr());
  }
  canZero(): number {
    return this.#lib.nbd_can_zero(this.#ptr());
  }
  canTrim(): number {
    return this.#lib.nbd_can_trim(this.#ptr());
  }

  /** Synchronous `nbd_pread` into all of `buf`. */
  pread(buf: Uint8Array<ArrayBuffer>, offset: number, flags = 0): number {
    return this.#lib.nbd_pread(this.#ptr(), buf, BigInt(buf.byteLength), BigInt(offset), flags);
  }
  /**
   * Nonblocking `nbd_pread` into all of `buf`. `buf` is referenced until the
   * Promise settles; the caller must not touch it before then.
   */
  preadAsync(buf: Uint8Array<ArrayBuffer>, offset: number, flags = 0): Promise<number> {
    return this.#lib.nbd_pread_nb(this.#ptr(), buf, BigInt(buf.byteLength), BigInt(offset), flags)
      .then((r) => keepAlive(buf, r));
  }
  pwrite(buf: Uint8Array<ArrayBuffer>, offset: number, flags = 0): number {
    return this.#lib.nbd_pwrite(this.#ptr(), buf, BigInt(buf.byteLength), BigInt(offset), flags);
  }
  /** Nonblocking `nbd_pwrite`; same buffer rule as {@link preadAsync}. */
  pwriteAsync(buf: Uint8Array<ArrayBuffer>, offset: number, flags = 0): Promise<number> {
    return this.#lib.nbd_pwrite_nb(this.#ptr(), buf, BigInt(buf.byteLength), BigInt(offset), flags)
      .then((r) => keepAlive(buf, r));
  }
  flush(flags = 0): number {
    return this.#lib.nbd_flush(this.#ptr(), flags);
  }
  flushAsync(flags = 0): Promise<number> {
    return this.#lib.nbd_flush_nb(this.#ptr(), flags);
  }
  /** `nbd_zero(h, count, offset, flags)`; leave NO_HOLE unset to allow punching holes. */
  zero(count: number, offset: number, flags = 0): number {
    return this.#lib.nbd_zero(this.#ptr(), BigInt(count), BigInt(offset), flags);
  }
  zeroAsync(count: number, offset: number, flags = 0): Promise<number> {
    return this.#lib.nbd_zero_nb(this.#ptr(), BigInt(count), BigInt(offset), flags);
  }
  trim(count: number, offset: number, flags = 0): number {
    return this.#lib.nbd_trim(this.#ptr(), BigInt(count), BigInt(offset), flags);
  }
  trimAsync(count: number, offset: number, flags = 0): Promise<number> {
    return this.#lib.nbd_trim_nb(this.#ptr(), BigInt(count), BigInt(offset), flags);
  }

  /**
   * Synchronous `nbd_block_status` for `[offset, offset + count)`,
   * `count < 2^32`. `sink` runs once per reply and meta context, during the
   * call, with a copy of the (length, flags) pairs.
   */
  blockStatus(count: number, offset: number, sink: ExtentSink, flags = 0): number {
    const { fn, check } = extentCallback(sink);
    const cb = new Deno.UnsafeCallback(EXTENT_CALLBACK_DEF, fn);
    try {
      return check(
        this.#lib.nbd_block_status(
          this.#ptr(),
          BigInt(count),
          BigInt(offset),
          extentCallbackStruct(cb),
          flags,
        ),
      );
    } finally {
      cb.close();
    }
  }

  /**
   * Nonblocking `nbd_block_status` with a thread-safe callback: libnbd's
   * thread waits while `sink` runs on the JS thread. While it is in flight,
   * make **no synchronous call on this handle** from JS: that call would wait
   * for the handle lock that the libnbd thread holds while it waits for JS.
   */
  async blockStatusAsync(
    count: number,
    offset: number,
    sink: ExtentSink,
    flags = 0,
  ): Promise<number> {
    const { fn, check } = extentCallback(sink);
    const cb = Deno.UnsafeCallback.threadSafe(EXTENT_CALLBACK_DEF, fn);
    try {
      const struct = extentCallbackStruct(cb);
      const r = await this.#lib.nbd_block_status_nb(
        this.#ptr(),
        BigInt(count),
        BigInt(offset),
        struct,
        flags,
      );
      return check(keepAlive(struct, r));
    } finally {
      cb.close();
    }
  }

  /** `nbd_shutdown`: orderly disconnect (waits for in-flight commands unless ABANDON_PENDING). */
  shutdown(flags = 0): number {
    return this.#lib.nbd_shutdown(this.#ptr(), flags);
  }
}
