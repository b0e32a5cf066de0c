/**
 * NBD layer against real servers: qemu-nbd (tests/fixtures/qemu_nbd.ts) and
 * qemu-storage-daemon.
 */
import { deepStrictEqual as assertEquals, ok, rejects, throws } from "node:assert/strict";
import { libnbdAvailable, openLibnbd } from "../ffi/libnbd.ts";
import { NbdClient } from "../lib/nbd/client.ts";
import { BASE_ALLOCATION, dirtyBitmapContext, dirtyExtents } from "../lib/nbd/maps.ts";
import { NbdSource, readExtents } from "../lib/nbd/reader.ts";
import { DependencyError, SourceError } from "../lib/core/errors.ts";
import { startQemuNbd, withQemuNbd } from "./fixtures/qemu_nbd.ts";
import { delay } from "../lib/core/async.ts";

const MiB = 1 << 20;

function filled(length: number, pattern: number): Uint8Array {
  return new Uint8Array(length).fill(pattern);
}

function allEqual(data: Uint8Array, value: number): boolean {
  for (let i = 0; i < data.length; i++) if (data[i] !== value) return false;
  return true;
}

/** Runs `program ARGS` as a server while `body` runs, once its unix socket `sock` accepts connections. */
async function withServer(
  program: string,
  args: string[],
  sock: string,
  body: () => Promise<void>,
): Promise<void> {
  const child = new Deno.Command(program, { args, stdout: "null", stderr: "null" }).spawn();
  try {
    for (let i = 0; i < 500; i++) {
      try {
        (await Deno.connect({ transport: "unix", path: sock })).close();
        break;
      } catch {
        await delay(20);
      }
    }
    await body();
  } finally {
    child.kill("SIGTERM");
    await child.status;
  }
}

Deno.test("NbdClient: size, flags and pread of written patterns (unix and tcp)", async () => {
  for (const tcp of [false, true]) {
    await withQemuNbd({
      size: 16 * MiB,
      tcp,
      writes: [{ offset: MiB, length: MiB, pattern: 0xab }, {
        offset: 5 * MiB + 512,
        length: 4096,
        pattern: 0x11,
      }],
    }, async (srv) => {
      const c = await NbdClient.connect({ uri: srv.uri });
      try {
        assertEquals(c.size, 16 * MiB);
        ok(c.readOnly);
        ok(c.canMultiConn);
        ok(!c.canMetaContext(BASE_ALLOCATION)); // not requested
        const buf = new Uint8Array(2 * MiB);
        await c.pread(buf, 0);
        ok(allEqual(buf.subarray(0, MiB), 0));
        ok(allEqual(buf.subarray(MiB), 0xab));
        const small = new Uint8Array(4096 + 1024);
        await c.pread(small, 5 * MiB);
        ok(allEqual(small.subarray(0, 512), 0));
        ok(allEqual(small.subarray(512, 4608), 0x11));
        ok(allEqual(small.subarray(4608), 0));
      } finally {
        await c.close();
        await c.close(); // idempotent
      }
    });
  }
});

Deno.test("NbdClient: out-of-range pread and use after close give SourceError", async () => {
  await withQemuNbd({ size: MiB }, async (srv) => {
    const c = await NbdClient.connect({ uri: srv.uri });
    await rejects(
      c.pread(new Uint8Array(4096), MiB),
      (e: unknown) => e instanceof SourceError && /out of bounds/.test(e.message),
    );
    // the connection is still usable
    await c.pread(new Uint8Array(4096), MiB - 4096);
    await rejects(c.blockStatus(BASE_ALLOCATION), SourceError); // not negotiated
    await c.close();
    await rejects(c.pread(new Uint8Array(1), 0), SourceError);
  });
});

Deno.test("NbdClient: connecting to a missing socket gives SourceError naming the URI", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const uri = `nbd+unix:///disk0?socket=${dir}/missing.sock`;
    await rejects(
      NbdClient.connect({ uri }),
      (e: unknown) =>
        e instanceof SourceError && e.message.includes(uri) &&
        /No such file/.test(e.message),
    );
    await rejects(NbdClient.connectMany({ uri }, 3), SourceError);
    await rejects(NbdClient.connect({ uri: "nbd://127.0.0.1:1/x" }), SourceError);
    await rejects(NbdClient.connect({ uri: "http://example.invalid/" }), SourceError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("NbdClient: block status for base:allocation and a dirty bitmap", async () => {
  await withQemuNbd({
    size: 64 * MiB,
    writes: [{ offset: 0, length: MiB, pattern: 0xab }],
    bitmap: "bm0",
    dirtyWrites: [
      { offset: 4 * MiB, length: MiB, pattern: 0xcd },
      { offset: 20 * MiB + 100, length: 4096, pattern: 0xef },
    ],
  }, async (srv) => {
    const ctx = dirtyBitmapContext("bm0");
    const c = await NbdClient.connect({ uri: srv.uri, metaContexts: [BASE_ALLOCATION, ctx] });
    try {
      ok(c.canMetaContext(BASE_ALLOCATION));
      ok(c.canMetaContext(ctx));
      ok(!c.canMetaContext("qemu:dirty-bitmap:nope"));
      const dirty = await c.blockStatus(ctx);
      assertEquals(dirty, [
        { offset: 0, length: 4 * MiB, flags: 0 },
        { offset: 4 * MiB, length: MiB, flags: 1 },
        { offset: 5 * MiB, length: 15 * MiB, flags: 0 },
        { offset: 20 * MiB, length: 65536, flags: 1 }, // 64 KiB granularity
        { offset: 20 * MiB + 65536, length: 44 * MiB - 65536, flags: 0 },
      ]);
      assertEquals(dirtyExtents(dirty), [
        { offset: 4 * MiB, length: MiB },
        { offset: 20 * MiB, length: 65536 },
      ]);
      const alloc = await c.blockStatus(BASE_ALLOCATION);
      // allocated (flags 0): the writes; the rest reads as zero (hole|zero = 3)
      const data = alloc.filter((e) => (e.flags & 2) === 0);
      assertEquals(data.map((e) => [e.offset, e.length]), [
        [0, MiB],
        [4 * MiB, MiB],
        [20 * MiB, 65536],
      ]);
      assertEquals(alloc[0].offset, 0);
      assertEquals(alloc.reduce((s, e) => s + e.length, 0), 64 * MiB);
      // a sub-range
      assertEquals(await c.blockStatus(ctx, 4 * MiB + 4096, 8192), [
        { offset: 4 * MiB + 4096, length: 8192, flags: 1 },
      ]);
    } finally {
      await c.close();
    }
  });
});

Deno.test("NbdClient: pwrite, zero, flush round trip on a writable export", async () => {
  await withQemuNbd({ size: 8 * MiB, writable: true }, async (srv) => {
    const c = await NbdClient.connect({ uri: srv.uri, metaContexts: [BASE_ALLOCATION] });
    try {
      ok(!c.readOnly);
      await c.pwrite(filled(2 * MiB, 0x5a), MiB);
      await c.flush();
      const back = new Uint8Array(2 * MiB);
      await c.pread(back, MiB);
      ok(allEqual(back, 0x5a));
      // durable in the image, seen by qemu-io beside the running server
      const out = await new Deno.Command("qemu-io", {
        args: ["-U", "-r", "-f", "qcow2", "-c", `read -P 0x5a ${MiB} ${2 * MiB}`, srv.imagePath],
      }).output();
      ok(
        out.success &&
          !new TextDecoder().decode(out.stdout).includes("Pattern verification failed"),
      );

      await c.zero(MiB + 65536, MiB);
      await c.flush();
      await c.pread(back, MiB);
      ok(allEqual(back.subarray(0, 65536), 0x5a));
      ok(allEqual(back.subarray(65536, 65536 + MiB), 0));
      ok(allEqual(back.subarray(65536 + MiB), 0x5a));
      // zeroing without NO_HOLE leaves the range reading as zero in base:allocation
      const alloc = await c.blockStatus(BASE_ALLOCATION, MiB + 65536, MiB);
      ok(alloc.every((e) => e.flags & 2), JSON.stringify(alloc));

      await rejects(c.pwrite(filled(4096, 1), 8 * MiB), SourceError);
    } finally {
      await c.close();
    }
  });
});

Deno.test("readExtents over 2 connections: 64 MiB in order, right content", async () => {
  const size = 64 * MiB;
  const writes = Array.from({ length: 64 }, (_, i) => ({
    offset: i * MiB,
    length: MiB,
    pattern: (i * 37 + 1) & 0xff,
  }));
  await withQemuNbd({ size, writes }, async (srv) => {
    const clients = await NbdClient.connectMany({ uri: srv.uri }, 2);
    ok(clients.length === 2 && clients[0] !== clients[1]);
    try {
      const extents = [
        { offset: 0, length: size },
        { offset: 3 * MiB + 123, length: 5 * MiB }, // unaligned, re-reads a range
      ];
      let pos = 0;
      let ext = 0;
      let bytes = 0;
      for await (const { offset, data } of readExtents(clients, extents)) {
        if (pos === extents[ext].offset + extents[ext].length) pos = extents[++ext].offset;
        assertEquals(offset, pos);
        ok(data.length <= 2 * MiB);
        for (let i = 0; i < data.length; i += 4093) {
          const o = offset + i;
          if (data[i] !== ((Math.floor(o / MiB) * 37 + 1) & 0xff)) {
            throw new Error(`bad byte at ${o}`);
          }
        }
        pos += data.length;
        bytes += data.length;
      }
      assertEquals(bytes, size + 5 * MiB);
      assertEquals(ext, 1);
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
  });
});

Deno.test("NbdSource: map, read, dirty extents, 2 connections", async () => {
  await withQemuNbd({
    size: 32 * MiB + 4096,
    writes: [{ offset: 0, length: MiB, pattern: 1 }],
    bitmap: "b1",
    dirtyWrites: [{ offset: 32 * MiB, length: 4096, pattern: 2 }],
  }, async (srv) => {
    const src = await NbdSource.open(srv.uri, {
      connections: 2,
      metaContexts: [dirtyBitmapContext("b1")],
    });
    try {
      assertEquals(src.size, 32 * MiB + 4096);
      assertEquals(src.clients.length, 2);
      assertEquals(await src.map(), [
        { offset: 0, length: MiB, kind: "data" },
        { offset: MiB, length: 31 * MiB, kind: "zero" },
        { offset: 32 * MiB, length: 4096, kind: "data" },
      ]);
      assertEquals(await src.dirtyExtents("b1"), [{ offset: 32 * MiB, length: 4096 }]);
      const data = await src.read(MiB - 10, 5 * MiB);
      ok(allEqual(data.subarray(0, 10), 1));
      ok(allEqual(data.subarray(10), 0));
      const tail = await src.read(32 * MiB - 1, 4097);
      assertEquals([tail[0], tail[1], tail[4096]], [0, 2, 2]);
      await rejects(src.read(32 * MiB, 8192), SourceError);
    } finally {
      await src.close();
      await src.close();
    }
  });
});

Deno.test("NbdSource: a server without base:allocation maps everything as data", async () => {
  // nbdkit --no-sr: no structured replies, so no meta contexts at all
  const dir = await Deno.makeTempDir();
  const sock = `${dir}/nbdkit.sock`;
  try {
    await withServer(
      "nbdkit",
      ["--foreground", "--no-sr", "-U", sock, "memory", "size=1M"],
      sock,
      async () => {
        const src = await NbdSource.open(`nbd+unix:///?socket=${sock}`);
        try {
          ok(!src.canMetaContext(BASE_ALLOCATION));
          assertEquals(await src.map(), [{ offset: 0, length: MiB, kind: "data" }]);
        } finally {
          await src.close();
        }
      },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("NbdClient against qemu-storage-daemon: bitmap export and reads", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const img = `${dir}/disk.qcow2`;
    const mk = await new Deno.Command("qemu-img", {
      args: ["create", "-q", "-f", "qcow2", img, String(8 * MiB)],
    }).output();
    ok(mk.success);
    const add = await new Deno.Command("qemu-img", {
      args: ["bitmap", "--add", "-f", "qcow2", img, "bm0"],
    }).output();
    ok(add.success);
    ok(
      (await new Deno.Command("qemu-io", {
        args: ["-f", "qcow2", "-c", `write -P 0x77 ${2 * MiB} 65536`, img],
        stdout: "null",
      }).output()).success,
    );
    const sock = `${dir}/qsd.sock`;
    const qsdArgs = [
      "--blockdev",
      `driver=file,node-name=file0,filename=${img}`,
      "--blockdev",
      "driver=qcow2,node-name=disk0,file=file0",
      "--nbd-server",
      `addr.type=unix,addr.path=${sock}`,
      "--export",
      "type=nbd,id=e0,node-name=disk0,name=d0,writable=on,bitmaps.0=bm0",
    ];
    await withServer("qemu-storage-daemon", qsdArgs, sock, async () => {
      const src = await NbdSource.open(`nbd+unix:///d0?socket=${sock}`, {
        metaContexts: [dirtyBitmapContext("bm0")],
      });
      try {
        assertEquals(await src.dirtyExtents("bm0"), [{ offset: 2 * MiB, length: 65536 }]);
        const data = await src.read(2 * MiB, 65536);
        ok(allEqual(data, 0x77));
      } finally {
        await src.close();
      }
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a missing libnbd gives DependencyError naming the Debian package", () => {
  throws(
    () => openLibnbd("libnbd-missing-for-test.so.0"),
    (e: unknown) =>
      e instanceof DependencyError &&
      e.message.startsWith(
        "libnbd-missing-for-test.so.0 not found: install the Debian package libnbd0",
      ),
  );
  ok(libnbdAvailable());
});

Deno.test("qemu_nbd fixture: stop kills the server and removes the temp dir", async () => {
  const srv = await startQemuNbd({ size: MiB, writable: true });
  ok((await Deno.stat(srv.imagePath)).isFile);
  assertEquals(Number((await Deno.readTextFile(`${srv.dir}/qemu-nbd.pid`)).trim()), srv.pid);
  await srv.stop();
  await srv.stop();
  await rejects(Deno.stat(srv.dir), Deno.errors.NotFound);
  await rejects(NbdClient.connect({ uri: srv.uri }), SourceError);
  await rejects(startQemuNbd({ size: MiB, format: "raw", bitmap: "x" }));
});
