/**
 * zstd through node:zlib (native in Deno), shared by the writer's inline path,
 * the compression workers and the readers.
 *
 * @module
 */
import zlib from "node:zlib";
import { InputError, wrapError } from "../core/errors.ts";
import { SAMPLE_PIECE, SAMPLE_PIECES, worthCompressing } from "./compression_policy.ts";
import { canDecompressInto, decompressInto } from "../../ffi/zstd.ts";

/**
 * node:zlib's output chunk for compression. Its default 16 KiB makes it
 * allocate and concatenate many pieces for an incompressible megabyte; one
 * chunk of a megabyte makes it allocate (and drop) a megabyte even for a
 * record that shrinks to a few bytes, which held 80 MiB more memory in a
 * backup. Measured per 256 MiB at zstd:3: random data 165 ms (16 KiB), 115 ms
 * (64 KiB), 100 ms (1 MiB); uniform data 46, 46, 115 ms.
 */
const COMPRESS_CHUNK = 64 * 1024;

/** Decompressed size is known: one output chunk that holds it all. */
function oneChunk(bytes: number): number {
  return Math.max(64, bytes);
}

/**
 * zstd-compresses `data` at `level` into one frame that records its content
 * size; `windowLog` bounds the match window (and the tables zstd sets up).
 */
export function zstdCompress(data: Uint8Array, level: number, windowLog?: number): Uint8Array {
  const out = zlib.zstdCompressSync(data, {
    chunkSize: COMPRESS_CHUNK,
    params: {
      [zlib.constants.ZSTD_c_compressionLevel]: level,
      [zlib.constants.ZSTD_c_contentSizeFlag]: 1,
      ...(windowLog ? { [zlib.constants.ZSTD_c_windowLog]: windowLog } : {}),
    },
  });
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/** zstd level of the sample that decides: whether data shrinks barely depends on it. */
const SAMPLE_LEVEL = 1;
/** A window of the sample's size: it sees all of it, and smaller tables are quicker to set up. */
const SAMPLE_WINDOW_LOG = Math.log2(SAMPLE_PIECES * SAMPLE_PIECE);

/** Whether `data` is worth compressing, judged from a sample of it (compression_policy.ts). */
export function zstdMayShrink(data: Uint8Array): boolean {
  return worthCompressing(
    data,
    (sample) => zstdCompress(sample, SAMPLE_LEVEL, SAMPLE_WINDOW_LOG).length,
  );
}

/**
 * `data` as one zstd frame at `level` when that is smaller, else null. Data
 * whose sample does not shrink is not compressed at all.
 */
export function zstdCompressIfSmaller(data: Uint8Array, level: number): Uint8Array | null {
  if (!zstdMayShrink(data)) return null;
  const z = zstdCompress(data, level);
  return z.length < data.length ? z : null;
}

/**
 * Decompresses a record payload that must expand to exactly `length` bytes;
 * InputError (naming `where`) for anything else. `into` (at least `length`
 * bytes): where the data goes instead of a new buffer, through libzstd when it is
 * there (ffi/zstd.ts), else copied there from node:zlib's output.
 */
export function zstdDecompressExact(
  payload: Uint8Array,
  length: number,
  where: string,
  into?: Uint8Array,
): Uint8Array {
  if (into && canDecompressInto()) {
    // A frame that expands further fails as too big for its room.
    const n = decompressInto(payload, into.subarray(0, length));
    if (n instanceof Error) {
      throw new InputError(`${where}: zstd payload does not decompress (${n.message})`);
    }
    if (n !== length) {
      throw new InputError(`${where}: zstd payload expands to ${n} bytes, not ${length}`);
    }
    return into.subarray(0, length);
  }
  let out: Uint8Array;
  try {
    out = zlib.zstdDecompressSync(payload, {
      maxOutputLength: length,
      chunkSize: oneChunk(length),
    });
  } catch (err) {
    throw wrapError(
      err,
      InputError,
      `${where}: zstd payload does not decompress (${(err as Error).message})`,
    );
  }
  if (out.byteLength !== length) {
    throw new InputError(
      `${where}: zstd payload expands to ${out.byteLength} bytes, not ${length}`,
    );
  }
  const data = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  if (!into) return data;
  into.set(data);
  return into.subarray(0, length);
}
