/**
 * Exact-length reads from a ReadableStream of byte chunks, as a strictly
 * sequential parser needs them, with the position of every byte read.
 *
 * @module
 */

/** Buffers chunks of a byte stream and hands out exact slices in order. */
export class ByteReader {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  #chunk: Uint8Array = new Uint8Array(0);
  #done = false;
  /** Bytes handed out so far. */
  position = 0;

  constructor(src: ReadableStream<Uint8Array>) {
    this.#reader = src.getReader();
  }

  /**
   * Returns the next `n` bytes, or null if the stream ends first (then
   * `position` tells how far it got). The result may be a view of the source
   * chunk: callers that keep it must copy.
   */
  async read(n: number): Promise<Uint8Array | null> {
    if (this.#chunk.length >= n) return this.#take(n);
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      if (this.#chunk.length === 0 && !(await this.#pull())) {
        this.position += filled;
        return null;
      }
      const part = this.#chunk.subarray(0, Math.min(this.#chunk.length, n - filled));
      out.set(part, filled);
      filled += part.length;
      this.#chunk = this.#chunk.subarray(part.length);
    }
    this.position += n;
    return out;
  }

  /** True when no byte is left. */
  async atEnd(): Promise<boolean> {
    while (this.#chunk.length === 0) {
      if (!(await this.#pull())) return true;
    }
    return false;
  }

  /** Stops reading and releases the source. */
  async cancel(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    await this.#reader.cancel().catch(() => {});
  }

  #take(n: number): Uint8Array {
    const out = this.#chunk.subarray(0, n);
    this.#chunk = this.#chunk.subarray(n);
    this.position += n;
    return out;
  }

  async #pull(): Promise<boolean> {
    if (this.#done) return false;
    const { value, done } = await this.#reader.read();
    if (done) {
      this.#done = true;
      return false;
    }
    this.#chunk = value;
    return true;
  }
}
