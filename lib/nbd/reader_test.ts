import { deepStrictEqual as assertEquals, ok, rejects } from "node:assert/strict";
import type { NbdClient } from "./client.ts";
import { readExtents } from "./reader.ts";
import { SourceError } from "../core/errors.ts";
import { delay } from "../core/async.ts";

/** Byte at disk offset `o` of the fake disk. */
const byteAt = (o: number) => (o * 7 + (o >> 12)) & 0xff;

/** A stand-in for NbdClient: pread fills the fake disk's bytes after a random delay. */
function fakeClient(stats: { active: number; max: number; reads: number }, failAt?: number) {
  return {
    size: 1 << 30,
    async pread(buf: Uint8Array, offset: number): Promise<void> {
      stats.active++;
      stats.max = Math.max(stats.max, stats.active);
      stats.reads++;
      try {
        await new Promise((r) => setTimeout(r, Math.random() * 3));
        if (failAt !== undefined && offset <= failAt && failAt < offset + buf.length) {
          throw new SourceError(`fake read error at ${offset}`);
        }
        for (let i = 0; i < buf.length; i++) buf[i] = byteAt(offset + i);
      } finally {
        stats.active--;
      }
    },
  } as unknown as NbdClient;
}

Deno.test("readExtents yields pieces in order with correct content", async () => {
  const stats = { active: 0, max: 0, reads: 0 };
  const clients = [fakeClient(stats), fakeClient(stats)];
  const extents = [
    { offset: 100_000, length: 10_000 },
    { offset: 0, length: 5000 }, // not sorted: order of the input is kept
    { offset: 200_000, length: 1 },
    { offset: 300_000, length: 0 }, // empty: no chunk
  ];
  const seen: { offset: number; length: number }[] = [];
  for await (const { offset, data } of readExtents(clients, extents, { requestSize: 4096 })) {
    seen.push({ offset, length: data.length });
    for (let i = 0; i < data.length; i++) {
      if (data[i] !== byteAt(offset + i)) throw new Error(`bad byte at ${offset + i}`);
    }
  }
  const expected: { offset: number; length: number }[] = [];
  for (const [o, l] of [[100_000, 10_000], [0, 5000], [200_000, 1]]) {
    for (let p = o; p < o + l; p += 4096) {
      expected.push({ offset: p, length: Math.min(4096, o + l - p) });
    }
  }
  assertEquals(seen, expected);
  ok(stats.max <= 4 && stats.max >= 2, `max in flight ${stats.max}`);
});

Deno.test("readExtents: a yielded buffer stays intact until the next chunk is asked for", async () => {
  const stats = { active: 0, max: 0, reads: 0 };
  const clients = [fakeClient(stats)];
  const gen = readExtents(clients, [{ offset: 0, length: 64 * 1024 }], {
    requestSize: 1024,
    inFlight: 3,
  });
  const buffers = new Set<ArrayBufferLike>();
  for await (const { offset, data } of gen) {
    buffers.add(data.buffer);
    // let the reads in flight complete while we hold the chunk
    await delay(5);
    for (let i = 0; i < data.length; i++) {
      if (data[i] !== byteAt(offset + i)) throw new Error(`chunk at ${offset} was overwritten`);
    }
  }
  ok(buffers.size <= 4, `buffers reused (${buffers.size} distinct)`);
  assertEquals(stats.max, 3);
});

Deno.test("readExtents: a failed read is thrown after in-flight reads settle", async () => {
  const stats = { active: 0, max: 0, reads: 0 };
  const clients = [fakeClient(stats, 50_000), fakeClient(stats, 50_000)];
  const offsets: number[] = [];
  await rejects(async () => {
    for await (
      const c of readExtents(clients, [{ offset: 0, length: 100_000 }], { requestSize: 4096 })
    ) {
      offsets.push(c.offset);
    }
  }, (e: unknown) => e instanceof SourceError && /50000|fake read error/.test(e.message));
  assertEquals(stats.active, 0);
  assertEquals(offsets[offsets.length - 1], 45056); // every chunk before the failing one
});

Deno.test("readExtents: breaking early waits for in-flight reads", async () => {
  const stats = { active: 0, max: 0, reads: 0 };
  const clients = [fakeClient(stats), fakeClient(stats)];
  for await (
    const c of readExtents(clients, [{ offset: 0, length: 1 << 20 }], { requestSize: 4096 })
  ) {
    if (c.offset >= 8192) break;
  }
  assertEquals(stats.active, 0);
  ok(stats.reads < 256);
});

Deno.test("readExtents rejects request sizes of 4 MiB and more", async () => {
  await rejects(() => readExtents([], [], { requestSize: 4 << 20 }).next(), RangeError);
  await rejects(() => readExtents([], [], { inFlight: 0 }).next(), RangeError);
});
