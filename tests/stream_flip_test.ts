/**
 * Any changed bit of a stored payload is caught: every single-bit flip of a
 * zstd payload (by its payload checksum, before it is decompressed) and of a
 * raw payload at many positions (by its data checksum) makes `verify` fail
 * naming the record, and `restore` refuse without leaving a target. (Version
 * 2 streams, whose checksum covered only the decompressed data, let flips in
 * a zstd frame's header through.)
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { StreamWriter } from "../lib/stream/writer.ts";
import { openStreamFile } from "../lib/stream/reader.ts";
import { exists } from "../lib/core/files.ts";
import { pseudoRandom } from "./fixtures/bytes.ts";
import { assertOneLineError, dirtybit } from "./fixtures/cli.ts";

const KiB = 1 << 10;

function text(length: number): Uint8Array {
  const line = new TextEncoder().encode("a line of a log file, 0000000042 and so on\n");
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i += line.length) out.set(line.subarray(0, length - i), i);
  return out;
}

/** A stream of a text record (stored as zstd) and a random one (stored raw). */
async function writeStream(path: string): Promise<void> {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  const writer = new StreamWriter(file.writable, {
    disk: "vda",
    virtualSize: 256 * KiB,
    blockSize: 65536,
    level: "full",
    backupId: "flips",
    parentId: null,
    chainId: "flips",
    checkpoint: "",
    compression: "zstd:3",
  }, { workers: 0 });
  await writer.writeData(0, text(64 * KiB));
  await writer.writeData(128 * KiB, pseudoRandom(16 * KiB, 5));
  await writer.finish();
}

Deno.test("every single-bit flip of a stored payload fails verify and restore", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-test-" });
  try {
    const good = join(dir, "good.dbit");
    await writeStream(good);
    const reader = await openStreamFile(good);
    const payloads = [];
    for await (const rec of reader.records()) {
      if (rec.kind === "data") payloads.push(rec);
    }
    const [zstd, raw] = payloads;
    assert.ok(zstd.compressed && !raw.compressed);
    const bytes = await Deno.readFile(good);
    // Every byte of the zstd frame, and 48 bytes spread over the raw payload (first and last too).
    const positions = [
      ...Array.from({ length: zstd.storedLength }, (_, i) => ({
        offset: zstd.offset,
        at: zstd.payloadPosition + i,
        error: "stored payload checksum mismatch",
      })),
      ...Array.from({ length: 48 }, (_, i) => ({
        offset: raw.offset,
        at: raw.payloadPosition + Math.floor(i * (raw.storedLength - 1) / 47),
        error: "data checksum mismatch",
      })),
    ];
    const flipped: { path: string; offset: number; error: string }[] = [];
    for (const { offset, at, error } of positions) {
      for (let bit = 0; bit < 8; bit++) {
        const bad = bytes.slice();
        bad[at] ^= 1 << bit;
        const path = join(dir, `flip-${at}-${bit}.dbit`);
        await Deno.writeFile(path, bad);
        flipped.push({ path, offset, error });
      }
    }

    const verify = await dirtybit(["verify", "--json", ...flipped.map((f) => f.path)]);
    assert.equal(verify.code, 3, verify.stderr);
    const results = JSON.parse(verify.stdout) as { stream: string; ok: boolean; error: string }[];
    assert.equal(results.length, flipped.length);
    results.forEach((r, i) => {
      assert.equal(r.stream, flipped[i].path);
      assert.ok(!r.ok, `${r.stream} passed verify`);
      const { offset, error } = flipped[i];
      assert.equal(r.error, `${r.stream}: record at ${offset}: ${error} (corrupt stream)`);
    });

    // A flip in the zstd frame header that version 2 let through, and one in the raw payload.
    for (const f of [flipped[5 * 8], flipped.at(-9)!]) {
      const one = await dirtybit(["verify", f.path]);
      assert.equal(one.code, 3);
      assert.equal(
        one.stdout.trim(),
        `BAD  ${f.path}: ${f.path}: record at ${f.offset}: ${f.error} (corrupt stream)`,
      );
      const out = join(dir, "restored.raw");
      assertOneLineError(await dirtybit(["restore", "--out", out, f.path]), 3, f.error);
      assert.ok(!await exists(out), "no target is left");
    }
    assert.equal((await dirtybit(["verify", good])).code, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
