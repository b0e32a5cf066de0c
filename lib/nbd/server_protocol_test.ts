/** The NBD server's protocol decisions and encodings, without sockets. */
import assert from "node:assert/strict";
import {
  blockStatusChunk,
  decodeClientFlags,
  decodeOptionHeader,
  decodeRequest,
  errorChunk,
  greeting,
  handleOption,
  type Negotiated,
  Opt,
  readChunks,
} from "./server_protocol.ts";

const exp = { name: "vda", size: 10_000, description: "backup" };
const fresh = (): Negotiated => ({ structured: false, allocation: false, noZeroes: true });
const enc = new TextEncoder();

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}
function u16(n: number): Uint8Array {
  const b = new Uint8Array(2);
  new DataView(b.buffer).setUint16(0, n);
  return b;
}
function cat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, (at += p.length) - p.length);
  return out;
}
const str = (s: string) => cat(u32(enc.encode(s).length), enc.encode(s));
/** Reply type of an option reply (bytes 12..16). */
const replyType = (r: Uint8Array) => new DataView(r.buffer, r.byteOffset).getUint32(12);
const ERR = 2 ** 31;

Deno.test("greeting and client flags: fixed newstyle, no zeroes; unknown client flags refused", () => {
  assert.deepEqual([...greeting().subarray(0, 8)], [...enc.encode("NBDMAGIC")]);
  assert.deepEqual([...greeting().subarray(8, 16)], [...enc.encode("IHAVEOPT")]);
  assert.deepEqual(decodeClientFlags(u32(3)), { noZeroes: true });
  assert.deepEqual(decodeClientFlags(u32(1)), { noZeroes: false });
  assert.equal(decodeClientFlags(u32(4)), null);
  assert.equal(decodeOptionHeader(new Uint8Array(16)), null);
  const head = cat(enc.encode("IHAVEOPT"), u32(Opt.go), u32(9));
  assert.deepEqual(decodeOptionHeader(head), { option: Opt.go, length: 9 });
});

Deno.test("GO: export info and block sizes, then ack; an unknown name is ERR_UNKNOWN", () => {
  const go = handleOption(Opt.go, cat(str("vda"), u16(1), u16(2)), exp, fresh());
  assert.equal(go.next, "transmit");
  assert.deepEqual(go.replies.map(replyType), [3, 3, 3, 1]);
  const info = go.replies[0];
  const v = new DataView(info.buffer);
  assert.equal(v.getUint16(20), 0, "NBD_INFO_EXPORT");
  assert.equal(Number(v.getBigUint64(22)), 10_000);
  assert.equal(v.getUint16(30), 1 | 2 | 256, "HAS_FLAGS | READ_ONLY | CAN_MULTI_CONN");
  assert.equal(new DataView(go.replies[1].buffer).getUint32(30), 32 << 20, "max block");
  assert.equal(handleOption(Opt.info, cat(str(""), u16(0)), exp, fresh()).next, "continue");
  const unknown = handleOption(Opt.go, cat(str("vdb"), u16(0)), exp, fresh());
  assert.deepEqual(unknown.replies.map(replyType), [ERR + 6]);
  assert.equal(unknown.next, "continue");
  const bad = handleOption(Opt.go, cat(str("vda"), u16(3)), exp, fresh());
  assert.deepEqual(bad.replies.map(replyType), [ERR + 3]);
});

Deno.test("meta contexts need structured replies; base:allocation is selected", () => {
  const state = fresh();
  const query = cat(str("vda"), u32(1), str("base:allocation"));
  assert.deepEqual(
    handleOption(Opt.setMetaContext, query, exp, state).replies.map(replyType),
    [ERR + 3],
  );
  assert.deepEqual(
    handleOption(Opt.structuredReply, new Uint8Array(0), exp, state).replies.map(replyType),
    [1],
  );
  assert.equal(state.structured, true);
  const set = handleOption(Opt.setMetaContext, query, exp, state);
  assert.deepEqual(set.replies.map(replyType), [4, 1]);
  assert.equal(new DataView(set.replies[0].buffer).getUint32(20), 1, "context id");
  assert.equal(new TextDecoder().decode(set.replies[0].subarray(24)), "base:allocation");
  assert.equal(state.allocation, true);
  const other = handleOption(
    Opt.setMetaContext,
    cat(str("vda"), u32(1), str("qemu:dirty-bitmap:x")),
    exp,
    state,
  );
  assert.deepEqual(other.replies.map(replyType), [1]);
  assert.equal(state.allocation, false);
  const list = handleOption(Opt.listMetaContext, cat(str("vda"), u32(0)), exp, state);
  assert.deepEqual(list.replies.map(replyType), [4, 1]);
  assert.equal(state.allocation, false, "LIST selects nothing");
});

Deno.test("EXPORT_NAME, LIST, ABORT and unknown options", () => {
  const withZeroes = { ...fresh(), noZeroes: false };
  assert.equal(
    handleOption(Opt.exportName, enc.encode("vda"), exp, withZeroes).replies[0].length,
    134,
  );
  assert.equal(handleOption(Opt.exportName, enc.encode("vda"), exp, fresh()).replies[0].length, 10);
  assert.equal(handleOption(Opt.exportName, enc.encode("x"), exp, fresh()).next, "close");
  const list = handleOption(Opt.list, new Uint8Array(0), exp, fresh());
  assert.deepEqual(list.replies.map(replyType), [2, 1]);
  assert.equal(new TextDecoder().decode(list.replies[0].subarray(24)), "vda");
  assert.equal(handleOption(Opt.abort, new Uint8Array(0), exp, fresh()).next, "close");
  assert.deepEqual(
    handleOption(Opt.startTls, new Uint8Array(0), exp, fresh()).replies.map(replyType),
    [ERR + 1],
  );
  assert.deepEqual(handleOption(99, new Uint8Array(0), exp, fresh()).replies.map(replyType), [
    ERR + 1,
  ]);
});

Deno.test("requests, read chunks, block status and errors", () => {
  const req = new Uint8Array(28);
  const rv = new DataView(req.buffer);
  rv.setUint32(0, 0x25609513);
  rv.setUint16(4, 8);
  rv.setUint16(6, 7);
  rv.setBigUint64(8, 42n);
  rv.setBigUint64(16, 4096n);
  rv.setUint32(24, 512);
  assert.deepEqual(decodeRequest(req), {
    flags: 8,
    type: 7,
    cookie: 42n,
    offset: 4096,
    length: 512,
  });
  assert.equal(decodeRequest(new Uint8Array(28)), null);

  const parts = readChunks(7n, [
    { offset: 0, length: 3, kind: "data" },
    { offset: 3, length: 5, kind: "hole" },
  ], () => new Uint8Array([1, 2, 3]));
  assert.equal(parts.length, 3);
  const data = new DataView(parts[0].buffer);
  assert.equal(data.getUint32(0), 0x668e33ef);
  assert.deepEqual([data.getUint16(4), data.getUint16(6), data.getUint32(16)], [0, 1, 8 + 3]);
  const hole = new DataView(parts[2].buffer);
  assert.deepEqual([hole.getUint16(4), hole.getUint16(6), hole.getUint32(28)], [1, 2, 5]);
  assert.equal(
    readChunks(7n, [], () => new Uint8Array()).length,
    1,
    "an empty read is done at once",
  );

  const extents = [
    { offset: 0, length: 10, kind: "data" as const },
    { offset: 10, length: 20, kind: "zero" as const },
    { offset: 30, length: 30, kind: "hole" as const },
  ];
  const status = new DataView(blockStatusChunk(1n, extents, false).buffer);
  assert.equal(status.getUint32(16), 4 + 3 * 8);
  assert.equal(status.getUint32(20), 1, "context id");
  const pairs = [0, 1, 2].map((i) => [status.getUint32(24 + i * 8), status.getUint32(28 + i * 8)]);
  assert.deepEqual(pairs, [[10, 0], [20, 2], [30, 3]], "data, zero, hole | zero");
  assert.equal(new DataView(blockStatusChunk(1n, extents, true).buffer).getUint32(16), 12);

  const err = new DataView(errorChunk(9n, 5, "bad").buffer);
  assert.deepEqual([err.getUint16(4), err.getUint16(6), err.getUint32(20)], [1, 2 ** 15 + 1, 5]);
});
