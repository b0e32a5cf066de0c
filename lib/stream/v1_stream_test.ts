/**
 * Backups written before format version 2 stay readable: a version 1 stream
 * kept as a fixture (written by the version 1 writer) is read, verified and
 * served as a chain like any other.
 */
import assert from "node:assert/strict";
import { InputError } from "../core/errors.ts";
import { ChainSource } from "./chain_source.ts";
import { StreamReader, type StreamRecord } from "./reader.ts";
import { pseudoRandom as random } from "../../tests/fixtures/bytes.ts";

const FIXTURE = new URL("../../tests/fixtures/streams/v1-full.dbit", import.meta.url).pathname;
const MiB = 1 << 20;

/** The disk the fixture holds (its generator wrote these). */
function expectedDisk(): Uint8Array {
  const disk = new Uint8Array(3 * MiB + 1000);
  for (let i = 0; i < MiB; i++) disk[i] = (i >> 9) & 0xff;
  disk.set(random(2 * 65536, 1), MiB);
  disk.set(random(1000, 2), 3 * MiB);
  return disk;
}

async function readAll(bytes: Uint8Array): Promise<{ reader: StreamReader; recs: StreamRecord[] }> {
  const reader = await StreamReader.open(new Blob([bytes as Uint8Array<ArrayBuffer>]).stream());
  const recs: StreamRecord[] = [];
  for await (const rec of reader.records()) recs.push(rec);
  return { reader, recs };
}

Deno.test("a version 1 stream is read and verified", async () => {
  const { reader, recs } = await readAll(await Deno.readFile(FIXTURE));
  assert.equal(reader.header.version, 1);
  assert.deepEqual(recs.map((r) => [r.kind, r.offset, r.length]), [
    ["data", 0, MiB],
    ["data", MiB, 2 * 65536],
    ["zero", MiB + 2 * 65536, 65536],
    ["data", 3 * MiB, 1000],
  ]);
  const disk = new Uint8Array(3 * MiB + 1000);
  for (const r of recs) if (r.kind === "data") disk.set(r.data, r.offset);
  assert.deepEqual(disk, expectedDisk());
  assert.equal(reader.trailer.checksum, "cb37623f7adafa91");
});

Deno.test("a changed byte of a version 1 payload is still an InputError", async () => {
  const bytes = await Deno.readFile(FIXTURE);
  const { recs } = await readAll(bytes);
  const raw = recs[1];
  assert.ok(raw.kind === "data" && !raw.compressed);
  for (const at of [raw.payloadPosition, raw.payloadPosition + 70000]) {
    const bad = bytes.slice();
    bad[at] ^= 0x01;
    await assert.rejects(readAll(bad), InputError);
  }
});

Deno.test("a version 1 stream serves a chain by file position", async () => {
  const chain = await ChainSource.open([FIXTURE]);
  try {
    assert.deepEqual(await chain.read(0, chain.size), expectedDisk());
  } finally {
    await chain.close();
  }
});
