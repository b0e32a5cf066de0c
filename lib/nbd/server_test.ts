/**
 * The NBD server against a raw client of this test (what libnbd never
 * sends: writes to a read-only export, requests without structured replies,
 * several in flight on one connection), over a Unix socket.
 */
import assert from "node:assert/strict";
import { ByteReader } from "../stream/byte_reader.ts";
import { writeAll } from "../core/bytes.ts";
import { type NbdExport, NbdServer } from "./server.ts";

const SIZE = 8192;
const disk = new Uint8Array(SIZE).map((_, i) => i & 0xff);
disk.fill(0, 4096);
const exp: NbdExport = {
  name: "t",
  size: SIZE,
  allocation: (offset, length) => {
    const out = [];
    if (offset < 4096) {
      out.push({ offset, length: Math.min(length, 4096 - offset), kind: "data" as const });
    }
    if (offset + length > 4096) {
      const from = Math.max(offset, 4096);
      out.push({ offset: from, length: offset + length - from, kind: "hole" as const });
    }
    return out;
  },
  read: async (offset, length) => {
    await new Promise((r) => setTimeout(r, offset === 0 ? 30 : 0));
    if (offset === 1000) throw new Error("bad record");
    return { bytes: disk.slice(offset, offset + length), release: () => {} };
  },
};

function request(type: number, cookie: number, offset: number, length: number, flags = 0) {
  const b = new Uint8Array(28);
  const v = new DataView(b.buffer);
  v.setUint32(0, 0x25609513);
  v.setUint16(4, flags);
  v.setUint16(6, type);
  v.setBigUint64(8, BigInt(cookie));
  v.setBigUint64(16, BigInt(offset));
  v.setUint32(24, length);
  return b;
}

/** Connects and negotiates with NBD_OPT_EXPORT_NAME only: simple replies. */
async function oldClient(path: string) {
  const conn = await Deno.connect({ transport: "unix", path });
  const input = new ByteReader(conn.readable);
  await input.read(18);
  const opt = new Uint8Array(4 + 16 + 1);
  const v = new DataView(opt.buffer);
  v.setUint32(0, 3);
  opt.set(new TextEncoder().encode("IHAVEOPT"), 4);
  v.setUint32(12, 1);
  v.setUint32(16, 1);
  opt[20] = "t".charCodeAt(0);
  await writeAll(conn, opt);
  const info = (await input.read(10))!;
  return { conn, input, size: Number(new DataView(info.buffer, info.byteOffset).getBigUint64(0)) };
}

async function simpleReply(input: ByteReader) {
  const r = (await input.read(16))!;
  const v = new DataView(r.buffer, r.byteOffset);
  assert.equal(v.getUint32(0), 0x67446698);
  return { error: v.getUint32(4), cookie: Number(v.getBigUint64(8)) };
}

Deno.test("simple replies: reads out of order, EPERM for writes, EIO for a failed read, EINVAL past the end", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-test-" });
  const path = `${dir}/s.sock`;
  const logs: string[] = [];
  const server = NbdServer.start(
    Deno.listen({ transport: "unix", path }),
    exp,
    (_, t) => void logs.push(t),
  );
  try {
    const { conn, input, size } = await oldClient(path);
    assert.equal(size, SIZE);
    // The first read is slow: the second one's reply comes first.
    await writeAll(conn, request(0, 1, 0, 16));
    await writeAll(conn, request(0, 2, 16, 16));
    const first = await simpleReply(input);
    assert.deepEqual(first, { error: 0, cookie: 2 });
    assert.deepEqual(await input.read(16), disk.slice(16, 32));
    assert.deepEqual(await simpleReply(input), { error: 0, cookie: 1 });
    assert.deepEqual(await input.read(16), disk.slice(0, 16));
    // A write's payload is passed over; the next request is still understood.
    await writeAll(conn, request(1, 3, 0, 4));
    await writeAll(conn, new Uint8Array(4));
    assert.deepEqual(await simpleReply(input), { error: 1, cookie: 3 });
    await writeAll(conn, request(6, 4, 0, 512));
    assert.deepEqual(await simpleReply(input), { error: 1, cookie: 4 });
    await writeAll(conn, request(0, 5, 1000, 10));
    assert.deepEqual(await simpleReply(input), { error: 5, cookie: 5 });
    assert.match(logs.join("\n"), /read 1000\+10 failed \(EIO sent\): bad record/);
    await writeAll(conn, request(0, 6, SIZE - 1, 2));
    assert.deepEqual(await simpleReply(input), { error: 22, cookie: 6 });
    // Block status without a negotiated context is refused.
    await writeAll(conn, request(7, 7, 0, 512));
    assert.deepEqual(await simpleReply(input), { error: 22, cookie: 7 });
    // The hole reads as zeros without structured replies.
    await writeAll(conn, request(0, 8, 4000, 200));
    assert.deepEqual(await simpleReply(input), { error: 0, cookie: 8 });
    assert.deepEqual(await input.read(200), disk.slice(4000, 4200));
    await writeAll(conn, request(2, 9, 0, 0));
    assert.equal(await input.read(1), null, "DISC ends the connection");
    await input.cancel();
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});
