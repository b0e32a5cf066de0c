/**
 * Exact-length reads from a ReadableStream of byte chunks (or a file), as a
 * strictly sequential parser needs them, with the position of every byte read.
 *
 * @module
 */

/**
 * Where the chunks come from: `seek` and `readInto` only for a file, which can
 * skip without reading and read straight into the caller's buffer.
 */
interface ChunkSource {
  next(): Promise<Uint8Array | null>;
  cancel(): Promise<void>;
  seek?(position: number): Promise<void>;
  /** Reads up to `dest.length` bytes into `dest`; 0 at the end. */
  readInto?(dest: Uint8Array): Promise<number>;
}

/** Read size of a file source: small, as an index scan reads a header per record and seeks on. */
const FILE_CHUNK = 16 * 1024;

/** Buffers chunks of a byte stream and hands out exact slices in order. */
export class ByteReader {
  readonly #src: ChunkSource;
  #chunk: Uint8Array = new Uint8Array(0);
  #done = false;
  #cancelled = false;
  /** Bytes handed out so far. */
  position = 0;

  /**
   * `src`: a byte stream, or an open file read from its current position
   * (0), which can {@link skip} by seeking and is closed by `cancel`.
   */
  constructor(src: ReadableStream<Uint8Array> | Deno.FsFile) {
    this.#src = src instanceof Deno.FsFile ? fileChunks(src) : streamChunks(src);
  }

  /**
   * Passes over the next `n` bytes; false if the stream ends first. A file
   * seeks (the bytes are not read); a stream reads through them.
   */
  async skip(n: number): Promise<boolean> {
    if (this.#chunk.length >= n || !this.#src.seek) {
      for (let left = n; left > 0;) {
        const part = await this.read(Math.min(left, 1 << 20));
        if (!part) return false;
        left -= part.length;
      }
      return true;
    }
    this.position += n;
    this.#chunk = new Uint8Array(0);
    await this.#src.seek(this.position);
    return true;
  }

  /**
   * Returns the next `n` bytes, or null if the stream ends first (then
   * `position` tells how far it got). The result may be a view of the source
   * chunk: callers that keep it must copy.
   */
  async read(n: number): Promise<Uint8Array | null> {
    if (this.#chunk.length >= n) return this.#take(n);
    const out = new Uint8Array(n);
    return await this.readInto(out) ? out : null;
  }

  /** Bytes buffered: a {@link read} of up to this many returns a view, without reading. */
  get buffered(): number {
    return this.#chunk.length;
  }

  /**
   * Copies the next `dest.length` bytes into `dest`; false if the stream ends
   * first (then `position` tells how far it got). A file source reads what
   * is not buffered straight into `dest`, allocating nothing.
   */
  async readInto(dest: Uint8Array): Promise<boolean> {
    const n = dest.length;
    let filled = 0;
    while (filled < n) {
      if (this.#chunk.length === 0) {
        const direct = this.#src.readInto && !this.#done && n - filled >= FILE_CHUNK
          ? await this.#src.readInto(dest.subarray(filled))
          : -1;
        if (direct > 0) {
          filled += direct;
          continue;
        }
        if (direct === 0) this.#done = true;
        if (!(await this.#pull())) {
          this.position += filled;
          return false;
        }
      }
      const part = this.#chunk.subarray(0, Math.min(this.#chunk.length, n - filled));
      dest.set(part, filled);
      filled += part.length;
      this.#chunk = this.#chunk.subarray(part.length);
    }
    this.position += n;
    return true;
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
    if (this.#cancelled) return;
    this.#cancelled = this.#done = true;
    await this.#src.cancel().catch(() => {});
  }

  #take(n: number): Uint8Array {
    const out = this.#chunk.subarray(0, n);
    this.#chunk = this.#chunk.subarray(n);
    this.position += n;
    return out;
  }

  async #pull(): Promise<boolean> {
    if (this.#done) return false;
    const value = await this.#src.next();
    if (value === null) {
      this.#done = true;
      return false;
    }
    this.#chunk = value;
    return true;
  }
}

function streamChunks(src: ReadableStream<Uint8Array>): ChunkSource {
  const reader = src.getReader();
  return {
    next: async () => {
      const { value, done } = await reader.read();
      return done ? null : value;
    },
    cancel: () => reader.cancel(),
  };
}

function fileChunks(file: Deno.FsFile): ChunkSource {
  return {
    next: async () => {
      const buf = new Uint8Array(FILE_CHUNK);
      const n = await file.read(buf);
      return n === null ? null : buf.subarray(0, n);
    },
    // deno-lint-ignore require-await
    cancel: async () => file.close(),
    seek: async (position) => {
      await file.seek(position, Deno.SeekMode.Start);
    },
    readInto: async (dest) => await file.read(dest) ?? 0,
  };
}
