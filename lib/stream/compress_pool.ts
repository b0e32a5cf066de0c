/**
 * A process-wide pool of compression Workers shared by every StreamWriter, so
 * concurrent backups of many disks do not each pay for their own isolates.
 * Writers acquire it, submit payloads and release it; the last release ends
 * the workers.
 *
 * @module
 */
import type { CompressRequest, CompressResponse } from "./compress_worker.ts";

/** What to store for one payload: the zstd frame, or the input when zstd did not shrink it. */
export interface CompressResult {
  readonly out: Uint8Array;
  readonly compressed: boolean;
}

interface Pending {
  resolve(result: CompressResult): void;
  reject(err: Error): void;
}

class CompressPool {
  readonly #workers: Worker[] = [];
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #turn = 0;
  users = 0;

  grow(count: number): void {
    while (this.#workers.length < count) {
      const w = new Worker(new URL("./compress_worker.ts", import.meta.url), { type: "module" });
      w.onmessage = (ev: MessageEvent<CompressResponse>) => this.#settle(ev.data);
      w.onerror = (ev) => {
        ev.preventDefault();
        this.#failAll(new Error(`compression worker failed: ${ev.message}`));
      };
      this.#workers.push(w);
    }
  }

  /** Compresses `data` (transferred: the caller must not use it afterwards). */
  compress(data: Uint8Array, level: number): Promise<CompressResult> {
    const id = this.#nextId++;
    const worker = this.#workers[this.#turn++ % this.#workers.length];
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      const req: CompressRequest = { id, level, data };
      worker.postMessage(req, [data.buffer as ArrayBuffer]);
    });
  }

  #settle(res: CompressResponse): void {
    const p = this.#pending.get(res.id);
    if (!p) return;
    this.#pending.delete(res.id);
    if (res.out) p.resolve({ out: res.out, compressed: res.compressed === true });
    else p.reject(new Error(`zstd compression failed: ${res.error}`));
  }

  #failAll(err: Error): void {
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }

  terminate(): void {
    for (const w of this.#workers) w.terminate();
    this.#workers.length = 0;
    this.#failAll(new Error("compression pool was shut down"));
  }
}

let shared: CompressPool | null = null;

/** A handle on the shared pool; `release` exactly once. */
export interface CompressPoolHandle {
  /** Compresses `data`, which is transferred: the caller must not use it afterwards. */
  compress(data: Uint8Array, level: number): Promise<CompressResult>;
  release(): void;
}

/** Acquires the shared pool with at least `workers` workers (> 0). */
export function acquireCompressPool(workers: number): CompressPoolHandle {
  const pool = shared ?? (shared = new CompressPool());
  pool.grow(workers);
  pool.users++;
  let released = false;
  return {
    compress: (data, level) => pool.compress(data, level),
    release() {
      if (released) return;
      released = true;
      if (--pool.users === 0) {
        pool.terminate();
        if (shared === pool) shared = null;
      }
    },
  };
}
