/**
 * POSIX ustar headers for writing an archive strictly sequentially (the OVA
 * container). A tar entry states its size before its data, so callers must
 * know each entry's exact size up front. Pure.
 *
 * @module
 */
import { UsageError } from "../core/errors.ts";

/** Tar block size. */
export const TAR_BLOCK = 512;
/** Largest entry size an octal ustar size field holds (8 GiB - 1). */
export const MAX_USTAR_SIZE = 8 ** 11 - 1;

function putString(block: Uint8Array, offset: number, length: number, value: string): void {
  const bytes = new TextEncoder().encode(value);
  if (bytes.length > length) {
    throw new UsageError(`tar field '${value}' is longer than ${length} bytes`);
  }
  block.set(bytes, offset);
}

function putOctal(block: Uint8Array, offset: number, length: number, value: number): void {
  putString(block, offset, length, value.toString(8).padStart(length - 1, "0") + "\0");
}

/** Big-endian base-256 size (GNU/star extension, read by every modern tar) for sizes ≥ 8 GiB. */
function putBase256(block: Uint8Array, offset: number, length: number, value: number): void {
  let v = BigInt(value);
  for (let i = offset + length - 1; i > offset; i--) {
    block[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  block[offset] = 0x80;
}

/**
 * The 512-byte header of a regular file entry. `name` must fit ustar's
 * 100-byte name field (OVA members are flat names).
 */
export function tarHeader(name: string, size: number, mtimeSeconds: number): Uint8Array {
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`bad tar entry size ${size}`);
  const block = new Uint8Array(TAR_BLOCK);
  putString(block, 0, 100, name);
  putOctal(block, 100, 8, 0o644);
  putOctal(block, 108, 8, 0);
  putOctal(block, 116, 8, 0);
  if (size > MAX_USTAR_SIZE) putBase256(block, 124, 12, size);
  else putOctal(block, 124, 12, size);
  putOctal(block, 136, 12, Math.floor(mtimeSeconds));
  block.fill(0x20, 148, 156); // checksum is computed with its own field as spaces
  block[156] = 0x30; // '0': regular file
  putString(block, 257, 6, "ustar\0");
  putString(block, 263, 2, "00");
  putString(block, 265, 32, "root");
  putString(block, 297, 32, "root");
  const sum = block.reduce((a, b) => a + b, 0);
  putString(block, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return block;
}

/** Zero bytes that pad an entry of `size` bytes to the block size. */
export function tarPadding(size: number): Uint8Array {
  return new Uint8Array((TAR_BLOCK - (size % TAR_BLOCK)) % TAR_BLOCK);
}

/** End of archive: two zero blocks. */
export function tarEnd(): Uint8Array {
  return new Uint8Array(2 * TAR_BLOCK);
}
