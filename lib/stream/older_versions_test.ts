/**
 * Backups written by older dirtybits stay readable: a version 1 and a
 * version 2 stream kept as fixtures (each written by the writer of its
 * version, from the same disk) are read, verified and served as a chain like
 * any other, and a changed payload byte in them is still an error.
 */
import assert from "node:assert/strict";
import { InputError } from "../core/errors.ts";
import { ChainSource } from "./chain_source.ts";
import { StreamReader, type StreamRecord } from "./reader.ts";
import { pseudoRandom as random } from "../../tests/fixtures/bytes.ts";

const MiB = 1 << 20;
const fixture = (version: number) =>
  new URL(`../../tests/fixtures/streams/v${version}-full.dbit`, import.meta.url).pathname;
/** The trailer checksum of each fixture. */
const CHECKSUMS: Record<number, string> = { 1: "cb37623f7adafa91", 2: "a0922eeae9978d36" };

/** The disk both fixtures hold (their generators wrote these). */
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

for (const version of [1, 2]) {
  Deno.test(`a version ${version} stream is read and verified`, async () => {
    const { reader, recs } = await readAll(await Deno.readFile(fixture(version)));
    assert.equal(reader.header.version, version);
    assert.deepEqual(recs.map((r) => [r.kind, r.offset, r.length]), [
      ["data", 0, MiB],
      ["data", MiB, 2 * 65536],
      ["zero", MiB + 2 * 65536, 65536],
      ["data", 3 * MiB, 1000],
    ]);
    const disk = new Uint8Array(3 * MiB + 1000);
    for (const r of recs) if (r.kind === "data") disk.set(r.data, r.offset);
    assert.deepEqual(disk, expectedDisk());
    assert.equal(reader.trailer.checksum, CHECKSUMS[version]);
  });

  Deno.test(`a changed byte of a version ${version} payload is still an InputError`, async () => {
    const bytes = await Deno.readFile(fixture(version));
    const { recs } = await readAll(bytes);
    const raw = recs[1];
    assert.ok(raw.kind === "data" && !raw.compressed);
    for (const at of [raw.payloadPosition, raw.payloadPosition + 70000]) {
      const bad = bytes.slice();
      bad[at] ^= 0x01;
      await assert.rejects(readAll(bad), InputError);
    }
  });

  Deno.test(`a version ${version} stream serves a chain by file position`, async () => {
    const chain = await ChainSource.open([fixture(version)]);
    try {
      assert.deepEqual(await chain.read(0, chain.size), expectedDisk());
    } finally {
      await chain.close();
    }
  });
}
