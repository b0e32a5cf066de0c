/**
 * A process-wide pool of record Workers shared by every StreamWriter, so
 * concurrent backups of many disks do not each pay for their own isolates.
 * Writers acquire it, submit data and release it; the last release ends the
 * workers.
 *
 * @module
 */
import type { RecordRequest, RecordResponse } from "./record_worker.ts";
import type { DataRecordSpec } from "./data_record.ts";

/** An encoded record, and the buffer it was encoded in when the record is a compact copy. */
export interface EncodedRecord {
  readonly record: Uint8Array;
  readonly spare?: Uint8Array;
}

interface Pending {
  resolve(result: EncodedRecord): void;
  reject(err: Error): void;
}

class RecordPool {
  readonly #workers: Worker[] = [];
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #turn = 0;
  users = 0;

  grow(count: number): void {
    while (this.#workers.length < count) {
      const w = new Worker(new URL("./record_worker.ts", import.meta.url), { type: "module" });
      w.onmessage = (ev: MessageEvent<RecordResponse>) => this.#settle(ev.data);
      w.onerror = (ev) => {
        ev.preventDefault();
        this.#failAll(new Error(`record worker failed: ${ev.message}`));
      };
      this.#workers.push(w);
    }
  }

  /** Whether fewer records are being encoded than there are workers. */
  idle(): boolean {
    return this.#pending.size < this.#workers.length;
  }

  encode(buf: Uint8Array, spec: DataRecordSpec): Promise<EncodedRecord> {
    const id = this.#nextId++;
    const worker = this.#workers[this.#turn++ % this.#workers.length];
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      const req: RecordRequest = { id, spec, buf };
      worker.postMessage(req, [buf.buffer as ArrayBuffer]);
    });
  }

  #settle(res: RecordResponse): void {
    const p = this.#pending.get(res.id);
    if (!p) return;
    this.#pending.delete(res.id);
    if (res.record) p.resolve({ record: res.record, spare: res.spare });
    else p.reject(new Error(`encoding a record failed: ${res.error}`));
  }

  #failAll(err: Error): void {
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }

  terminate(): void {
    for (const w of this.#workers) w.terminate();
    this.#workers.length = 0;
    this.#failAll(new Error("record pool was shut down"));
  }
}

let shared: RecordPool | null = null;

/** A handle on the shared pool; `release` exactly once. */
export interface RecordPoolHandle {
  /**
   * encodeDataRecordInPlace in a worker. `buf` is transferred: it must own
   * its whole buffer, which comes back as the record's or as the spare.
   */
  encode(buf: Uint8Array, spec: DataRecordSpec): Promise<EncodedRecord>;
  /** Whether a worker would take a record now (fewer in the pool than workers, of all writers). */
  idle(): boolean;
  release(): void;
}

/** Acquires the shared pool with at least `workers` workers (> 0). */
export function acquireRecordPool(workers: number): RecordPoolHandle {
  const pool = shared ?? (shared = new RecordPool());
  pool.grow(workers);
  pool.users++;
  let released = false;
  return {
    encode: (buf, spec) => pool.encode(buf, spec),
    idle: () => pool.idle(),
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
