/**
 * Whether a record is worth compressing, decided from a small sample so that
 * data zstd cannot shrink (encrypted, already compressed, random) costs a
 * sample's compression instead of the whole record's. Pure: the compressor
 * is passed in.
 *
 * Each record is judged alone (no state carried between records), so the
 * stream a backup writes does not depend on how its records were spread over
 * workers.
 *
 * @module
 */

/** Bytes of each sampled piece. */
export const SAMPLE_PIECE = 4096;
/** Pieces sampled per record, spread evenly from its first byte to its last. */
export const SAMPLE_PIECES = 8;
/** Records up to this size are compressed without sampling: a sample would be most of them. */
export const SAMPLE_FROM = 4 * SAMPLE_PIECES * SAMPLE_PIECE;

/**
 * The sample of `data` the decision is made on: SAMPLE_PIECES pieces of
 * SAMPLE_PIECE bytes at even steps, the first at its start and the last at
 * its end, copied into one buffer; null when `data` is short enough to be
 * compressed whole.
 */
export function sampleOf(data: Uint8Array): Uint8Array | null {
  if (data.length <= SAMPLE_FROM) return null;
  const sample = new Uint8Array(SAMPLE_PIECES * SAMPLE_PIECE);
  const step = (data.length - SAMPLE_PIECE) / (SAMPLE_PIECES - 1);
  for (let i = 0; i < SAMPLE_PIECES; i++) {
    const at = Math.floor(i * step);
    sample.set(data.subarray(at, at + SAMPLE_PIECE), i * SAMPLE_PIECE);
  }
  return sample;
}

/**
 * Whether data whose sample of `sampled` bytes compressed to `compressed`
 * bytes is worth compressing whole: it must save at least 1/32 (3 %). Data
 * that saves less loses at most that much by being stored raw.
 */
export function sampleShrinks(sampled: number, compressed: number): boolean {
  return compressed * 32 < sampled * 31;
}

/**
 * Whether to compress `data` whole. `compressedSize` compresses bytes and
 * returns how many it made; it is called at most once, on the sample.
 */
export function worthCompressing(
  data: Uint8Array,
  compressedSize: (bytes: Uint8Array) => number,
): boolean {
  const sample = sampleOf(data);
  return sample === null || sampleShrinks(sample.length, compressedSize(sample));
}
