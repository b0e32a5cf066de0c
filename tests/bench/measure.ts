/**
 * What the benchmarks share besides the table: running a tool, timing a
 * step, the median of rounds, a disk image of random data and a stream sink
 * that discards.
 *
 * @module
 */
import { writeAll } from "../../lib/core/bytes.ts";
import { fillRandom } from "../fixtures/bytes.ts";
import { chunkReleasingSink } from "../../lib/stream/writer.ts";
import { passThroughSink, type StreamSink } from "../../lib/sinks/sink.ts";

/** Runs `program`; throws with its stderr unless it succeeds. */
export async function run(program: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(program, {
    args,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`${program} failed: ${new TextDecoder().decode(out.stderr)}`);
}

/** Wall-clock seconds `fn` takes. */
export async function seconds(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

/** The middle value (the upper one of an even count). */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/**
 * Writes a qcow2 image at `image` holding `size` bytes of random
 * (incompressible) data; with `keepRaw` the raw copy stays at `image.raw`.
 */
export async function randomQcow2(image: string, size: number, keepRaw = false): Promise<void> {
  const raw = `${image}.raw`;
  const file = await Deno.open(raw, { write: true, create: true, truncate: true });
  const chunk = new Uint8Array(4 << 20);
  for (let off = 0; off < size; off += chunk.length) {
    fillRandom(chunk);
    const piece = chunk.subarray(0, Math.min(chunk.length, size - off));
    await writeAll(file, piece);
  }
  file.close();
  await run("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", raw, image]);
  if (!keepRaw) await Deno.remove(raw);
}

/** A backup's sink factory whose streams go nowhere (done with each chunk once written). */
export function nullSink(): Promise<StreamSink> {
  return Promise.resolve(
    passThroughSink(chunkReleasingSink(new WritableStream<Uint8Array>({ write() {} }))),
  );
}
