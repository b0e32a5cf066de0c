/**
 * Why dirtybit compresses with node:zlib's zstd and not the product card's
 * `@bokuweb/zstd-wasm`: throughput of both at level 3 on the same data, one
 * core each, and whether the WASM build decodes a frame without a content
 * size (which streaming zstd writers produce).
 *
 * @module
 */
import zlib from "node:zlib";
import { Buffer } from "node:buffer";
import { atLeast, type BenchRow, mbps } from "./table.ts";
import { fillRandom } from "../fixtures/bytes.ts";

const MiB = 1 << 20;

function sample(size: number): Uint8Array {
  const out = new Uint8Array(size);
  const text = new TextEncoder().encode("dirtybit zstd sample line 0123456789 lorem ipsum\n");
  for (let i = 0; i < size; i += text.length) {
    out.set(text.subarray(0, Math.min(text.length, size - i)), i);
  }
  fillRandom(out.subarray(0, size / 2));
  return out;
}

/** node:zlib zstd vs @bokuweb/zstd-wasm, level 3, 1 MiB records. */
export async function benchZstd(): Promise<BenchRow[]> {
  const wasm = await import("@bokuweb/zstd-wasm");
  await wasm.init();
  const data = sample(64 * MiB);
  const records = Array.from({ length: 64 }, (_, i) => data.subarray(i * MiB, (i + 1) * MiB));
  const time = (fn: (r: Uint8Array) => Uint8Array) => {
    const t0 = performance.now();
    for (const r of records) fn(r);
    return (performance.now() - t0) / 1000;
  };
  const level3 = { params: { [zlib.constants.ZSTD_c_compressionLevel]: 3 } };
  const native = time((r) => zlib.zstdCompressSync(r, level3));
  const viaWasm = time((r) => wasm.compress(r, 3));
  // A frame from a streaming compressor carries no content size.
  const streamed = await new Promise<Uint8Array>((resolve, reject) => {
    const z = zlib.createZstdCompress();
    const parts: Uint8Array[] = [];
    z.on("data", (c: Uint8Array) => parts.push(c));
    z.on("end", () => resolve(new Uint8Array(Buffer.concat(parts))));
    z.on("error", reject);
    z.end(records[0]);
  });
  let wasmDecodes = "decoded";
  try {
    const back = wasm.decompress(streamed);
    if (back.length !== MiB) wasmDecodes = `returns ${back.length} bytes`;
  } catch (err) {
    wasmDecodes = `failed (${(err as Error).message.slice(0, 40)})`;
  }
  return [atLeast(
    `zstd:3, 1 MiB records, one core: node:zlib vs @bokuweb/zstd-wasm (wasm on a streamed frame: ${wasmDecodes})`,
    mbps(64 * MiB, native),
    mbps(64 * MiB, viaWasm),
    viaWasm / native,
    1.0,
  )];
}
