/**
 * zstd through node:zlib (native in Deno), shared by the writer's inline path,
 * the compression workers and the readers.
 *
 * @module
 */
import zlib from "node:zlib";
import { InputError } from "../core/errors.ts";

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

/** zstd-compresses `data` at `level` into one frame that records its content size. */
export function zstdCompress(data: Uint8Array, level: number): Uint8Array {
  const out = zlib.zstdCompressSync(data, {
    chunkSize: COMPRESS_CHUNK,
    params: {
      [zlib.constants.ZSTD_c_compressionLevel]: level,
      [zlib.constants.ZSTD_c_contentSizeFlag]: 1,
    },
  });
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/**
 * Decompresses a record payload that must expand to exactly `length` bytes;
 * InputError (naming `where`) for anything else.
 */
export function zstdDecompressExact(
  payload: Uint8Array,
  length: number,
  where: string,
): Uint8Array {
  let out: Uint8Array;
  try {
    out = zlib.zstdDecompressSync(payload, {
      maxOutputLength: length,
      chunkSize: oneChunk(length),
    });
  } catch (err) {
    throw new InputError(`${where}: zstd payload does not decompress (${(err as Error).message})`);
  }
  if (out.byteLength !== length) {
    throw new InputError(
      `${where}: zstd payload expands to ${out.byteLength} bytes, not ${length}`,
    );
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}
