/**
 * zstd through node:zlib (native in Deno), shared by the writer's inline path,
 * the compression workers and the readers.
 *
 * @module
 */
import zlib from "node:zlib";
import { InputError } from "../core/errors.ts";

/**
 * node:zlib's output chunk for `bytes` of output: one chunk that fits it all
 * (zstd's worst case is input + 1/256 + a little), so node neither allocates
 * 16 KiB pieces nor concatenates them. Measured: twice the speed on
 * incompressible megabyte records.
 */
function oneChunk(bytes: number): number {
  return Math.max(64, bytes + (bytes >> 8) + 1024);
}

/** zstd-compresses `data` at `level` into one frame that records its content size. */
export function zstdCompress(data: Uint8Array, level: number): Uint8Array {
  const out = zlib.zstdCompressSync(data, {
    chunkSize: oneChunk(data.length),
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
