/**
 * Worker side of {@link DeflatePool}: splits a piece of disk into grains,
 * skips all-zero grains and zlib-compresses the others (node:zlib runs on the
 * calling thread, so parallelism needs workers).
 *
 * @module
 */
import { deflateSync } from "node:zlib";

/** A job: compress the grains of `bytes`. */
export interface DeflateJob {
  readonly id: number;
  readonly bytes: Uint8Array;
  readonly grainSize: number;
  readonly level: number;
}

/** A result: one entry per grain, null for an all-zero grain. */
export interface DeflateResult {
  readonly id: number;
  readonly grains?: (Uint8Array | null)[];
  readonly error?: string;
}

function isZero(bytes: Uint8Array): boolean {
  const words = bytes.byteOffset % 4 === 0 && bytes.length % 4 === 0
    ? new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4)
    : bytes;
  for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
  return true;
}

/** Compresses every grain of a job. */
export function compressGrains(job: DeflateJob): (Uint8Array | null)[] {
  const out: (Uint8Array | null)[] = [];
  for (let at = 0; at < job.bytes.length; at += job.grainSize) {
    const grain = job.bytes.subarray(at, at + job.grainSize);
    out.push(isZero(grain) ? null : new Uint8Array(deflateSync(grain, { level: job.level })));
  }
  return out;
}

// deno-lint-ignore no-explicit-any
const scope = globalThis as any;
if (typeof scope.WorkerGlobalScope !== "undefined" && scope instanceof scope.WorkerGlobalScope) {
  scope.onmessage = (e: MessageEvent<DeflateJob>) => {
    try {
      const grains = compressGrains(e.data);
      const transfer = grains.filter((g): g is Uint8Array => g !== null).map((g) => g.buffer);
      scope.postMessage({ id: e.data.id, grains } satisfies DeflateResult, transfer);
    } catch (err) {
      scope.postMessage({ id: e.data.id, error: String(err) } satisfies DeflateResult);
    }
  };
}
