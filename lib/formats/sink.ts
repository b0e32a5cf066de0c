/**
 * The append-only output every image writer uses: a `WritableStream` plus the
 * current position, zero fill and padding. It never seeks, so a pipe, an SSH
 * channel or a file all work the same.
 *
 * @module
 */
import { describeError, DirtybitError, TargetError, wrapError } from "../core/errors.ts";

const ZEROS = new Uint8Array(1 << 20);

/** Wraps a sink and counts what was appended. */
export class AppendSink {
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  #position = 0;

  constructor(stream: WritableStream<Uint8Array>) {
    this.#writer = stream.getWriter();
  }

  /** Bytes appended so far (= the file offset of the next byte). */
  get position(): number {
    return this.#position;
  }

  /** Appends bytes. The caller must not modify `bytes` afterwards. */
  async write(bytes: Uint8Array): Promise<void> {
    if (bytes.length === 0) return;
    try {
      await this.#writer.write(bytes);
    } catch (err) {
      if (err instanceof DirtybitError) throw err; // already names the file
      throw wrapError(err, TargetError, `cannot write the image: ${describeError(err)}`);
    }
    this.#position += bytes.length;
  }

  /** Appends `count` zero bytes. */
  async writeZeros(count: number): Promise<void> {
    while (count > 0) {
      const n = Math.min(count, ZEROS.length);
      await this.write(n === ZEROS.length ? ZEROS : ZEROS.subarray(0, n));
      count -= n;
    }
  }

  /** Zero-fills up to `offset`; throws if the position is already past it (a layout bug). */
  async padTo(offset: number): Promise<void> {
    if (offset < this.#position) {
      throw new RangeError(`layout error: at ${this.#position}, expected to be at most ${offset}`);
    }
    await this.writeZeros(offset - this.#position);
  }

  /** Asserts the position equals what the layout promised (catches layout bugs early). */
  expectAt(offset: number): void {
    if (offset !== this.#position) {
      throw new RangeError(`layout error: at ${this.#position}, expected ${offset}`);
    }
  }

  /** Flushes and closes the sink. */
  async close(): Promise<void> {
    try {
      await this.#writer.close();
    } catch (err) {
      throw wrapError(err, TargetError, `cannot finish the image: ${describeError(err)}`);
    }
  }

  /** Aborts the sink after a failure (errors while aborting are ignored: the first one wins). */
  async abort(reason: unknown): Promise<void> {
    await this.#writer.abort(reason).catch(() => {});
  }
}
