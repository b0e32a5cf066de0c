/**
 * A pool of Web Workers compressing VMDK grains in parallel. Jobs are
 * answered through promises, so the caller keeps the output order simply by
 * awaiting them in submission order.
 *
 * @module
 */
import type { DeflateJob, DeflateResult } from "./deflate_worker.ts";

interface Slot {
  readonly worker: Worker;
  readonly pending: Map<
    number,
    { resolve(r: (Uint8Array | null)[]): void; reject(e: Error): void }
  >;
}

/** Parallel zero-check + zlib compression of grains. */
export class DeflatePool {
  readonly #slots: Slot[] = [];
  readonly #level: number;
  #nextId = 0;

  constructor(workers: number, level: number) {
    this.#level = level;
    for (let i = 0; i < Math.max(1, workers); i++) {
      const worker = new Worker(new URL("./deflate_worker.ts", import.meta.url).href, {
        type: "module",
      });
      const slot: Slot = { worker, pending: new Map() };
      worker.onmessage = (e: MessageEvent<DeflateResult>) => {
        const p = slot.pending.get(e.data.id);
        slot.pending.delete(e.data.id);
        if (e.data.error) p?.reject(new Error(`grain compression failed: ${e.data.error}`));
        else p?.resolve(e.data.grains!);
      };
      worker.onerror = (e) => {
        e.preventDefault();
        for (const p of slot.pending.values()) {
          p.reject(new Error(`compression worker failed: ${e.message}`));
        }
        slot.pending.clear();
      };
      this.#slots.push(slot);
    }
  }

  /** Number of workers. */
  get size(): number {
    return this.#slots.length;
  }

  /** Compresses each `grainSize` grain of `bytes` (null = all zeros). */
  compress(bytes: Uint8Array, grainSize: number): Promise<(Uint8Array | null)[]> {
    const slot = this.#slots.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
    const id = this.#nextId++;
    // A copy is transferred: the source's buffer may be shared, external or reused.
    const own = bytes.slice();
    return new Promise((resolve, reject) => {
      slot.pending.set(id, { resolve, reject });
      const job: DeflateJob = { id, bytes: own, grainSize, level: this.#level };
      slot.worker.postMessage(job, [own.buffer as ArrayBuffer]);
    });
  }

  /** Stops the workers. */
  close(): void {
    for (const s of this.#slots) s.worker.terminate();
  }
}
