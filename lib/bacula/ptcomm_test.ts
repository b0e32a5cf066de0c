import assert from "node:assert/strict";
import { type ByteWriter, concatBytes } from "../core/bytes.ts";
import { InputError } from "../core/errors.ts";
import {
  type ByteReader,
  DataPacker,
  decodeHeader,
  encodePacket,
  MAX_PAYLOAD,
  type PacketKind,
  PacketReader,
  packetText,
  PacketWriter,
} from "./ptcomm.ts";
import { assertRejects } from "../../tests/helpers.ts";

function assertEquals(actual: unknown, expected: unknown): void {
  assert.deepStrictEqual(actual, expected);
}
function matches(cls: typeof InputError, text: string) {
  return (e: unknown) => e instanceof cls && e.message.includes(text);
}
function assertThrows(fn: () => unknown, cls: typeof InputError, text = "") {
  assert.throws(fn, matches(cls, text));
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Hands out the given bytes in reads of at most `chunk` bytes. */
function chunkedReader(bytes: Uint8Array, chunk: number): ByteReader {
  let at = 0;
  return {
    read(into: Uint8Array): Promise<number | null> {
      if (at >= bytes.length) return Promise.resolve(null);
      const n = Math.min(chunk, into.length, bytes.length - at);
      into.set(bytes.subarray(at, at + n));
      at += n;
      return Promise.resolve(n);
    },
  };
}

/** The same as a byte stream (a child's stdout), filling BYOB reads with at most `chunk` bytes. */
function chunkedStream(bytes: Uint8Array, chunk: number): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    type: "bytes",
    pull(ctl) {
      if (at >= bytes.length) {
        ctl.close();
        ctl.byobRequest?.respond(0);
        return;
      }
      const view = ctl.byobRequest!.view! as Uint8Array;
      const n = Math.min(chunk, view.byteLength, bytes.length - at);
      view.set(bytes.subarray(at, at + n));
      at += n;
      ctl.byobRequest!.respond(n);
    },
  });
}

/** Collects writes, accepting at most `chunk` bytes per call (short writes). */
function collectingWriter(chunk = Infinity): ByteWriter & { bytes(): Uint8Array } {
  const parts: Uint8Array[] = [];
  return {
    write(b: Uint8Array): Promise<number> {
      const n = Math.min(chunk, b.length);
      parts.push(b.slice(0, n));
      return Promise.resolve(n);
    },
    bytes() {
      return concatBytes(...parts);
    },
  };
}

Deno.test("encodePacket matches the byte examples of docs/ptcomm.md §7", () => {
  assertEquals(dec.decode(encodePacket("C", "Hello Bacula\n")), "C000013\nHello Bacula\n");
  assertEquals(dec.decode(encodePacket("F")), "F000000\n");
  assertEquals(dec.decode(encodePacket("T")), "T000000\n");
  assertEquals(dec.decode(encodePacket("D", "0123456789")), "D000010\n0123456789");
  assertEquals(encodePacket("D", new Uint8Array(MAX_PAYLOAD)).length, 8 + MAX_PAYLOAD);
});

Deno.test("encodePacket refuses oversized, empty C/D and F/T with payload", () => {
  assertThrows(() => encodePacket("D", new Uint8Array(MAX_PAYLOAD + 1)), InputError, "at most");
  assertThrows(() => encodePacket("D", ""), InputError, "cannot be empty");
  assertThrows(() => encodePacket("C", ""), InputError, "cannot be empty");
  assertThrows(() => encodePacket("F", "x"), InputError, "cannot carry");
  assertThrows(() => encodePacket("T", "x"), InputError, "cannot carry");
});

Deno.test("decodeHeader accepts every letter and rejects malformed headers", () => {
  for (const k of "CDEAWISNRPOVQ") {
    assertEquals(decodeHeader(enc.encode(`${k}000012\n`)), {
      kind: k as PacketKind,
      length: 12,
    });
  }
  assertEquals(decodeHeader(enc.encode("D999999\n")).length, 999999);
  assertEquals(decodeHeader(enc.encode("F000000\n")).kind, "F");
  const bad: [string, string][] = [
    ["X000001\n", "unknown packet kind"],
    ["c000001\n", "unknown packet kind"],
    ["C00001a\n", "6 decimal digits"],
    ["C 00001\n", "6 decimal digits"],
    ["C-00001\n", "6 decimal digits"],
    ["C000001 ", "not a newline"],
    ["F000001\n", "no payload"],
    ["T000010\n", "no payload"],
    ["C000000\n", "empty payload"],
    ["D000000\n", "empty payload"],
  ];
  for (const [h, msg] of bad) assertThrows(() => decodeHeader(enc.encode(h)), InputError, msg);
  assertThrows(() => decodeHeader(enc.encode("C0001\n")), InputError, "8 bytes");
});

Deno.test("PacketReader reassembles packets from 1-byte reads, from a reader or a byte stream", async () => {
  const big = new Uint8Array(MAX_PAYLOAD).map((_, i) => i % 251);
  const wire = concatBytes(
    encodePacket("C", "Hello cloudstack 1\n"),
    encodePacket("D", big),
    encodePacket("F"),
    encodePacket("D", "x"),
    encodePacket("T"),
  );
  const sources = [chunkedReader, chunkedStream];
  for (
    const [chunk, source] of [1, 7, 8, 9, 65536, wire.length].flatMap((c) =>
      sources.map((s) => [c, s] as const)
    )
  ) {
    const r = new PacketReader(source(wire, chunk));
    const p1 = await r.read();
    assertEquals(p1?.kind, "C");
    assertEquals(packetText(p1!), "Hello cloudstack 1");
    const p2 = await r.read();
    assertEquals(p2?.kind, "D");
    assertEquals(p2?.payload, big);
    assertEquals((await r.read())?.kind, "F");
    assertEquals(dec.decode((await r.read())!.payload), "x");
    assertEquals((await r.read())?.kind, "T");
    assertEquals(await r.read(), null);
    assertEquals(await r.read(), null);
  }
});

Deno.test("PacketReader transient payloads are views that the next read may overwrite", async () => {
  const wire = concatBytes(encodePacket("D", "aaaa"), encodePacket("D", "bbbb"));
  const r = new PacketReader(chunkedStream(wire, 5));
  const a = await r.readTransient();
  assertEquals(dec.decode(a!.payload), "aaaa");
  assertEquals(dec.decode((await r.readTransient())!.payload), "bbbb");
  assertEquals(await r.readTransient(), null);
});

Deno.test("PacketReader payloads stay valid after later reads", async () => {
  const wire = concatBytes(encodePacket("D", "aaaa"), encodePacket("D", "bbbb"));
  const r = new PacketReader(chunkedReader(wire, 3));
  const a = await r.read();
  await r.read();
  assertEquals(dec.decode(a!.payload), "aaaa");
});

Deno.test("PacketReader: truncated header, truncated payload, bad header", async () => {
  await assertRejects(
    () => new PacketReader(chunkedReader(enc.encode("C0000"), 2)).read(),
    InputError,
    "inside a packet header",
  );
  await assertRejects(
    () => new PacketReader(chunkedReader(enc.encode("D000010\n01234"), 2)).read(),
    InputError,
    "5 of 10 payload bytes",
  );
  await assertRejects(
    () => new PacketReader(chunkedReader(enc.encode("Z000001\nx"), 100)).read(),
    InputError,
    "unknown packet kind",
  );
  await assertRejects(
    () => new PacketReader(chunkedReader(enc.encode("D1000000\n"), 100)).read(),
    InputError,
    "not a newline",
  );
});

Deno.test("packetText strips trailing whitespace only", () => {
  const p = { kind: "C" as const, payload: enc.encode("  FNAME:/a b\r\n\n") };
  assertEquals(packetText(p), "  FNAME:/a b");
});

Deno.test("PacketWriter serialises packets and survives short writes", async () => {
  const w = collectingWriter(3);
  const pw = new PacketWriter(w);
  await Promise.all([
    pw.command("Hello Bacula"),
    pw.eod(),
    pw.send("I", "note"),
    pw.command("OK\n"),
  ]);
  assertEquals(
    dec.decode(w.bytes()),
    "C000013\nHello Bacula\nF000000\nI000004\nnoteC000003\nOK\n",
  );
});

Deno.test("DataPacker cuts full packets, never empty ones", async () => {
  const w = collectingWriter();
  const pw = new PacketWriter(w);
  const packer = new DataPacker(pw, 4);
  await packer.flush();
  await packer.push(enc.encode("abc"));
  await packer.push(enc.encode("defghij"));
  await packer.push(new Uint8Array(0));
  await packer.flush();
  await packer.flush();
  assertEquals(dec.decode(w.bytes()), "D000004\nabcdD000004\nefghD000002\nij");
  assertThrows(() => new DataPacker(pw, MAX_PAYLOAD + 1), InputError);
});
