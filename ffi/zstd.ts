/**
 * Deno FFI to the system's libzstd for one thing node:zlib cannot do:
 * decompress a frame into a buffer the caller owns (node:zlib always
 * allocates its output). Only `ffi/` touches pointers.
 *
 * @module
 */

const symbols = {
  ZSTD_createDCtx: { parameters: [], result: "pointer" },
  ZSTD_decompressDCtx: {
    parameters: ["pointer", "buffer", "usize", "buffer", "usize"],
    result: "usize",
  },
  ZSTD_isError: { parameters: ["usize"], result: "u32" },
  ZSTD_getErrorName: { parameters: ["usize"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

type Zstd = { lib: Deno.DynamicLibrary<typeof symbols>["symbols"]; dctx: Deno.PointerObject };

/** The library and a decompression context reused for every frame; null when unavailable. */
let zstd: Zstd | null | undefined;

function load(): Zstd | null {
  if (zstd !== undefined) return zstd;
  try {
    const lib = Deno.dlopen("libzstd.so.1", symbols).symbols;
    const dctx = lib.ZSTD_createDCtx();
    zstd = dctx ? { lib, dctx } : null;
  } catch {
    zstd = null;
  }
  return zstd;
}

/** Whether {@link decompressInto} can run (libzstd.so.1 loads, FFI is allowed). */
export function canDecompressInto(): boolean {
  return load() !== null;
}

/**
 * Decompresses the zstd frame(s) of `src` into `dest`: the bytes written, or
 * an Error with zstd's reason (corrupt input, `dest` too small). Synchronous,
 * on the calling thread, as node:zlib's sync calls are. Call only when
 * {@link canDecompressInto}.
 */
export function decompressInto(src: Uint8Array, dest: Uint8Array): number | Error {
  const z = load();
  if (!z) return new Error("libzstd is not available");
  const r = z.lib.ZSTD_decompressDCtx(
    z.dctx,
    dest,
    BigInt(dest.length),
    src,
    BigInt(src.length),
  );
  if (z.lib.ZSTD_isError(r)) {
    const name = z.lib.ZSTD_getErrorName(r);
    return new Error(name ? Deno.UnsafePointerView.getCString(name) : "zstd error");
  }
  return Number(r);
}
