/**
 * The secure channel against a man in the middle on loopback: a proxy that
 * understands the framing tampers with, replays, reorders or truncates one
 * sender frame; the receiver must reject it and close. Plus the bandwidth
 * limit, measured over real TCP, and a peer that refuses and hangs up while
 * the sender is still writing.
 */
import assert from "node:assert/strict";
import { InputError, TargetError } from "../../lib/core/errors.ts";
import { SecureChannel } from "../../lib/replication/channel.ts";
import { HELLO_BYTES } from "../../lib/replication/handshake.ts";

const PSK = "a test key that is at least 32 characters long";

type Mutation = "tamper" | "replay" | "reorder" | "truncate" | "none";

/** Reads exactly n bytes or null at a clean end. */
async function readExact(conn: Deno.Conn, n: number): Promise<Uint8Array | null> {
  const out = new Uint8Array(n);
  for (let off = 0; off < n;) {
    const got = await conn.read(out.subarray(off)).catch(() => null);
    if (got === null) return null;
    off += got;
  }
  return out;
}

/** A proxy that applies `mutation` to sender frame number `target` (0 = the proof). */
function startProxy(upstreamPort: number, mutation: Mutation, target: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const done = (async () => {
    const client = await listener.accept();
    const server = await Deno.connect({ hostname: "127.0.0.1", port: upstreamPort });
    const down = (async () => {
      const buf = new Uint8Array(65536);
      for (;;) {
        const n = await server.read(buf).catch(() => null);
        if (n === null) break;
        await client.write(buf.subarray(0, n)).catch(() => {});
      }
      try {
        client.close();
      } catch { /* closed */ }
    })();
    const hello = await readExact(client, HELLO_BYTES);
    if (hello) await server.write(hello);
    let held: Uint8Array | undefined;
    for (let i = 0;; i++) {
      const head = await readExact(client, 4);
      if (!head) break;
      const body = await readExact(client, new DataView(head.buffer).getUint32(0));
      if (!body) break;
      const frame = new Uint8Array(4 + body.length);
      frame.set(head);
      frame.set(body, 4);
      if (i === target && mutation === "tamper") frame[4] ^= 0x40;
      if (i === target && mutation === "truncate") {
        await server.write(frame.subarray(0, 4 + (body.length >> 1)));
        break;
      }
      if (i === target && mutation === "reorder") {
        held = frame;
        continue;
      }
      await server.write(frame).catch(() => {});
      if (held) {
        await server.write(held).catch(() => {});
        held = undefined;
      }
      if (i === target && mutation === "replay") await server.write(frame).catch(() => {});
    }
    try {
      server.close();
    } catch { /* closed */ }
    await down;
  })();
  return { port: (listener.addr as Deno.NetAddr).port, done, close: () => listener.close() };
}

/** A receiver-side channel that answers status requests until it fails. */
function startEcho() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const result = (async () => {
    const conn = await listener.accept();
    listener.close();
    let channel: SecureChannel | undefined;
    try {
      channel = await SecureChannel.accept(conn, { psk: PSK, handshakeTimeoutMs: 5000 });
      for (;;) {
        const msg = await channel.receive();
        if (msg.type === "close") return "closed";
        await channel.send({ type: "status", replicas: [] });
      }
    } catch (err) {
      return err;
    } finally {
      channel?.close();
    }
  })();
  return { port: (listener.addr as Deno.NetAddr).port, result };
}

async function exchange(mutation: Mutation, target: number) {
  const echo = startEcho();
  const proxy = startProxy(echo.port, mutation, target);
  let senderError: unknown;
  try {
    const channel = await SecureChannel.connect("127.0.0.1", proxy.port, {
      psk: PSK,
      handshakeTimeoutMs: 5000,
      idleTimeoutMs: 5000,
    });
    try {
      // All requests go out before any answer is awaited, so that a proxy
      // holding one back can reorder it.
      for (let i = 0; i < 3; i++) await channel.send({ type: "status-request" });
      for (let i = 0; i < 3; i++) await channel.expect("status");
      await channel.send({ type: "close" });
    } finally {
      channel.close();
    }
  } catch (err) {
    senderError = err;
  }
  const receiverResult = await echo.result;
  proxy.close();
  await proxy.done;
  return { senderError, receiverResult };
}

Deno.test("channel: an untouched exchange works through the proxy", async () => {
  const { senderError, receiverResult } = await exchange("none", -1);
  assert.equal(senderError, undefined);
  assert.equal(receiverResult, "closed");
});

for (const mutation of ["tamper", "replay", "reorder", "truncate"] as const) {
  Deno.test(`channel: frame ${mutation} rejected and the connection closed`, async () => {
    const { senderError, receiverResult } = await exchange(mutation, 2);
    assert.ok(receiverResult instanceof InputError, String(receiverResult));
    assert.match(
      (receiverResult as Error).message,
      mutation === "truncate" ? /truncated/ : /failed authentication/,
    );
    assert.ok(senderError, "the sender must see the channel fail");
  });
}

Deno.test("channel: a tampered proof fails the handshake on both sides alike", async () => {
  const { senderError, receiverResult } = await exchange("tamper", 0);
  assert.match((receiverResult as Error).message, /pre-shared keys differ/);
  assert.match((senderError as Error).message, /pre-shared keys differ/);
});

Deno.test("channel: the bandwidth limit holds within 10 %", async () => {
  const rate = 2_000_000;
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const received = (async () => {
    const channel = await SecureChannel.accept(await listener.accept(), { psk: PSK });
    let bytes = 0;
    for (;;) {
      const msg = await channel.receive();
      if (msg.type === "close") break;
      if (msg.type === "data") bytes += msg.payload.length;
    }
    channel.close();
    return bytes;
  })();
  const channel = await SecureChannel.connect("127.0.0.1", (listener.addr as Deno.NetAddr).port, {
    psk: PSK,
    bandwidthBytesPerSecond: rate,
  });
  const payload = new Uint8Array(256 << 10);
  const started = performance.now();
  const before = channel.bytesSent;
  for (let i = 0; i < 20; i++) {
    await channel.send({
      type: "data",
      offset: i * payload.length,
      length: payload.length,
      codec: "raw",
      payload,
    });
  }
  await channel.send({ type: "close" });
  const seconds = (performance.now() - started) / 1000;
  const sent = channel.bytesSent - before;
  assert.equal(await received, 20 * payload.length);
  channel.close();
  listener.close();
  const measured = sent / seconds;
  assert.ok(
    Math.abs(measured - rate) / rate <= 0.1,
    `measured ${Math.round(measured)} B/s against a limit of ${rate} B/s`,
  );
});

Deno.test("channel: a peer that refuses and hangs up mid-stream: the sender reports its refusal", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const refused = (async () => {
    const channel = await SecureChannel.accept(await listener.accept(), { psk: PSK });
    await channel.receive();
    await channel.send({ type: "error", message: "no space left on /dr/vda.qcow2" });
    // Closing with the sender's data unread resets the connection.
    channel.close();
  })();
  const channel = await SecureChannel.connect("127.0.0.1", (listener.addr as Deno.NetAddr).port, {
    psk: PSK,
  });
  const payload = new Uint8Array(1 << 20);
  let failure: unknown;
  try {
    await channel.send({ type: "status-request" });
    // The peer has answered and hung up; far more than the socket buffers
    // hold follows: a write fails before the answer is ever read.
    await refused;
    for (let i = 0; i < 256; i++) {
      await channel.send({ type: "data", offset: i << 20, length: 1 << 20, codec: "raw", payload });
    }
    await channel.send({ type: "end", records: 256, bytes: 256 << 20 });
  } catch (err) {
    failure = err;
  } finally {
    channel.close();
    listener.close();
  }
  await refused;
  assert.ok(failure instanceof TargetError, String(failure));
  assert.equal((failure as Error).message, "the peer refused: no space left on /dr/vda.qcow2");
});
