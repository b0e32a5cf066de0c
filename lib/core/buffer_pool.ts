/**
 * A bounded pool of byte buffers of one size, reused instead of allocating a
 * new one per record: V8 frees dropped ArrayBuffers only once some 64 MiB of
 * them piled up, which made most of a merge's or a serve's memory peak.
 *
 * Ownership is strict: {@link BufferPool.take} hands out bytes the taker owns
 * alone until it passes them to {@link BufferPool.give}, exactly once, and
 * from then on neither it nor anyone it lent a view to may touch them.
 *
 * @module
 */

/** Buffers of `size` bytes, at most `keep` of them kept while nobody holds them. */
export class BufferPool {
  readonly #free: ArrayBuffer[] = [];
  readonly #freeSet = new Set<ArrayBuffer>();

  constructor(readonly size: number, readonly keep: number) {}

  /**
   * `length` bytes (not zeroed) the caller owns until it gives them back: a
   * view of a pooled buffer when `length <= size`, else a new buffer of
   * their own (given back, it is simply dropped).
   */
  take(length: number): Uint8Array<ArrayBuffer> {
    if (length > this.size) return new Uint8Array(length);
    const spare = this.#free.pop();
    if (spare) this.#freeSet.delete(spare);
    return new Uint8Array(spare ?? new ArrayBuffer(this.size), 0, length);
  }

  /**
   * Hands back bytes from {@link take}; their buffer is kept for the next
   * take if the pool has room. RangeError if it was given back already
   * (two owners of one buffer would overwrite each other's bytes).
   */
  give(bytes: Uint8Array): void {
    const buf = bytes.buffer;
    if (!(buf instanceof ArrayBuffer) || buf.byteLength !== this.size) return;
    if (this.#freeSet.has(buf)) throw new RangeError("a pooled buffer was given back twice");
    if (this.#free.length >= this.keep) return;
    this.#free.push(buf);
    this.#freeSet.add(buf);
  }

  /** Buffers kept for the next takes. */
  get kept(): number {
    return this.#free.length;
  }
}

/**
 * Bytes lent by their owner (a view of a pooled or cached buffer): the
 * borrower must not change them and calls `release` once done, after which
 * it must not touch them. Releasing twice is harmless.
 */
export interface LentBytes {
  readonly bytes: Uint8Array;
  release(): void;
}
