/**
 * Integration tests of `dirtybit serve` on a chain made by real backups of a
 * qemu-storage-daemon disk (a full and 3 incrementals; compressed and
 * uncompressed records, holes, zero runs, a size not a multiple of the
 * block size), read by NBD clients that are not ours: qemu-img, nbdinfo,
 * nbdcopy, and libnbd through lib/nbd/client.ts.
 */
import assert from "node:assert/strict";
import { withQsd } from "./fixtures/qsd.ts";
import { run } from "./helpers.ts";
import {
  assertOneLineError,
  assertSameImage,
  cliCommand,
  dirtybit,
  dirtybitOk,
} from "./fixtures/cli.ts";
import { NbdClient, NbdRequestError } from "../lib/nbd/client.ts";
import { ChainSource } from "../lib/stream/chain_source.ts";
import { openStreamFile } from "../lib/stream/reader.ts";

const KiB = 1 << 10;
const MiB = 1 << 20;

/** A `dirtybit serve` child process, once it printed its URI. */
interface Served {
  uri: string;
  /** Everything it wrote to stderr so far. */
  stderr(): string;
  /** Sends `signal` and waits for the exit code. */
  stop(signal?: Deno.Signal): Promise<number>;
}

async function serve(args: string[]): Promise<Served> {
  const child = cliCommand(["serve", ...args]).spawn();
  let err = "";
  const errDone = child.stderr.pipeThrough(new TextDecoderStream()).pipeTo(
    new WritableStream({ write: (t) => void (err += t) }),
  );
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("\n")) {
    const { value, done } = await lines.read();
    if (done) {
      const code = (await child.status).code;
      await errDone;
      throw new Error(`serve exited ${code} before serving: ${err}`);
    }
    out += value;
  }
  lines.releaseLock();
  const rest = child.stdout.cancel().catch(() => {});
  return {
    uri: out.trim(),
    stderr: () => err,
    stop: async (signal = "SIGTERM") => {
      child.kill(signal);
      const { code } = await child.status;
      await Promise.all([errDone, rest]);
      return code;
    },
  };
}

async function exists(path: string): Promise<boolean> {
  return await Deno.lstat(path).then(() => true, () => false);
}

interface MapEntry {
  offset: number;
  length: number;
  type: number;
}

async function nbdMap(uri: string): Promise<MapEntry[]> {
  const entries = JSON.parse(await run("nbdinfo", ["--map", "--json", uri])) as MapEntry[];
  return entries.map(({ offset, length, type }) => ({ offset, length, type }));
}

Deno.test("serve: a full and 3 incrementals as an NBD disk", async (t) => {
  const size = 24 * MiB + 7680;
  await withQsd({
    disks: [{
      size,
      writes: [{ pattern: 0x51, offset: 0, length: 3 * MiB }, {
        pattern: 0x52,
        offset: 8 * MiB,
        length: 2 * MiB,
      }],
    }],
  }, async ({ qsd, at }) => {
    const state = at("state");
    const backup = async (stream: string, extra: string[] = []) =>
      await dirtybitOk([
        "backup",
        ...qsd.sourceArgs(),
        ...["--state-dir", state, "--out", at(stream), ...extra],
      ]);
    const random = new Uint8Array(768 * KiB);
    for (let i = 0; i < random.length; i += 65536) {
      crypto.getRandomValues(random.subarray(i, i + 65536));
    }
    // s0: compressible patterns plus random data (stored raw, as it does not shrink).
    await qsd.guestPwrite(0, random, 4 * MiB);
    await backup("s0.dbit");
    // s1: uncompressed records.
    await qsd.guestWrite(0, 0x53, 512 * KiB, 256 * KiB);
    await backup("s1.dbit", ["--compress", "none"]);
    // s2: a zero run over data of the full, and compressed data.
    await qsd.guestWriteZeroes(0, 8 * MiB, MiB);
    await qsd.guestWrite(0, 0x54, 16 * MiB, 384 * KiB);
    await backup("s2.dbit");
    // s3: the disk's last, partial block.
    await qsd.guestWrite(0, 0x55, size - 3000, 3000);
    await backup("s3.dbit");
    await qsd.snapshotImage(0, at("p3.raw"));
    const s = [0, 1, 2, 3].map((i) => at(`s${i}.dbit`));
    await dirtybitOk(["restore", "--out", at("r.raw"), ...s]);
    await assertSameImage(at("r.raw"), at("p3.raw"));
    const socket = at("nbd.sock");

    await t.step("the export equals the restored image; holes and data as recorded", async () => {
      const served = await serve(["--socket", socket, ...s]);
      try {
        assert.match(served.uri, /^nbd\+unix:\/\/\/.*\?socket=/);
        const info = JSON.parse(await run("nbdinfo", ["--json", served.uri]));
        const exp = info.exports[0];
        assert.equal(exp["export-size"], size);
        assert.equal(exp.is_read_only, true);
        assert.equal(exp.block_size_maximum, 32 * MiB);
        assert.ok(exp.contexts.includes("base:allocation"));
        await assertSameImage(served.uri, at("r.raw"));

        // What the streams record, read and verified by the sequential reader.
        const chain = await ChainSource.open(s);
        const recorded = chain.allocation(0, size);
        await chain.close();
        const flags = { data: 0, zero: 2, hole: 3 };
        assert.deepEqual(
          await nbdMap(served.uri),
          recorded.map((e) => ({ offset: e.offset, length: e.length, type: flags[e.kind] })),
        );
        const kindAt = (offset: number) =>
          recorded.find((e) => e.offset <= offset && offset < e.offset + e.length)!.kind;
        assert.equal(kindAt(8 * MiB), "zero", "the zero run of s2");
        assert.equal(kindAt(20 * MiB), "hole", "never written");
        assert.equal(kindAt(4 * MiB), "data");
        assert.equal(kindAt(size - 1), "data");
      } finally {
        assert.equal(await served.stop(), 0);
      }
      assert.ok(!await exists(socket), "SIGTERM removes the socket");
    });

    await t.step("two clients read at once", async () => {
      const served = await serve(["--socket", socket, ...s]);
      try {
        await Promise.all([
          run("nbdcopy", [served.uri, at("c1.raw")]),
          run("nbdcopy", ["--connections=2", served.uri, at("c2.raw")]),
        ]);
        await assertSameImage(at("c1.raw"), at("r.raw"));
        await assertSameImage(at("c2.raw"), at("r.raw"));
        // Writes are refused: the export is read-only.
        const client = await NbdClient.connect({ uri: served.uri });
        try {
          assert.equal(client.readOnly, true);
        } finally {
          await client.close();
        }
      } finally {
        assert.equal(await served.stop("SIGINT"), 0);
      }
      assert.ok(!await exists(socket), "SIGINT removes the socket");
    });

    await t.step("the index is kept beside each stream and reused", async () => {
      for (const p of s) assert.ok(await exists(`${p}.idx`), `${p}.idx`);
      const before = await Promise.all(s.map((p) => Deno.stat(`${p}.idx`)));
      const served = await serve(["--socket", socket, ...s]);
      assert.equal(await served.stop(), 0);
      const after = await Promise.all(s.map((p) => Deno.stat(`${p}.idx`)));
      assert.deepEqual(after.map((a) => a.mtime), before.map((b) => b.mtime), "not rewritten");
      assert.doesNotMatch(served.stderr(), /rebuilding/);
      // A damaged index is rebuilt, and says so.
      const damaged = await Deno.readFile(`${s[1]}.idx`);
      damaged[100] ^= 0xff;
      await Deno.writeFile(`${s[1]}.idx`, damaged);
      const again = await serve(["--socket", socket, ...s]);
      try {
        await assertSameImage(again.uri, at("r.raw"));
      } finally {
        assert.equal(await again.stop(), 0);
      }
      assert.match(again.stderr(), /rebuilding .*s1\.dbit\.idx: its checksum does not match/);
    });

    await t.step("a corrupted payload fails that read with EIO and a log line", async () => {
      const bad = s.map((_, i) => at(`bad${i}.dbit`));
      for (const [i, p] of s.entries()) await Deno.copyFile(p, bad[i]);
      // A data record of s2 (compressed) gets one payload byte flipped.
      const reader = await openStreamFile(bad[2]);
      let target;
      for await (const rec of reader.recordHeaders()) {
        if (rec.kind === "data" && rec.compressed && !target) target = rec;
      }
      assert.ok(target, "s2 has a compressed data record");
      const bytes = await Deno.readFile(bad[2]);
      bytes[target.payloadPosition + Math.floor(target.storedLength / 2)] ^= 0x01;
      await Deno.writeFile(bad[2], bytes);
      const served = await serve(["--socket", socket, ...bad]);
      try {
        const client = await NbdClient.connect({ uri: served.uri });
        try {
          await assert.rejects(
            () => client.pread(new Uint8Array(4 * KiB), target.offset),
            (err) => err instanceof NbdRequestError && err.errno === 5,
          );
          // Elsewhere the disk still reads, and correctly.
          const good = new Uint8Array(64 * KiB);
          await client.pread(good, 0);
          const expected = (await Deno.readFile(at("r.raw"))).subarray(0, 64 * KiB);
          assert.deepEqual(good, expected);
        } finally {
          await client.close();
        }
      } finally {
        assert.equal(await served.stop(), 0);
      }
      assert.match(
        served.stderr(),
        new RegExp(
          `read ${target.offset}\\+${
            4 * KiB
          } failed \\(EIO sent\\): .*bad2\\.dbit.*checksum mismatch`,
        ),
      );
    });

    await t.step("bad input is a one-line error", async () => {
      assertOneLineError(
        await dirtybit(["serve", "--socket", socket, at("missing.dbit")]),
        5,
        "missing.dbit",
      );
      assertOneLineError(
        await dirtybit(["serve", "--socket", socket, s[0], s[2]]),
        4,
        "give the streams in chain order without gaps",
      );
      assertOneLineError(await dirtybit(["serve", "--socket", socket, s[1]]), 4, "full");
      assertOneLineError(
        await dirtybit(["serve", "--socket", socket, at("p3.raw")]),
        3,
        "not a dirtybit backup stream",
      );
      assertOneLineError(await dirtybit(["serve", s[0]]), 2, "--socket PATH or --listen");
      const deep = at("d".repeat(120) + ".sock");
      assertOneLineError(
        await dirtybit(["serve", "--socket", deep, s[0]]),
        2,
        "over the 107 bytes a Unix socket path can have: choose a shorter path",
      );
      assertOneLineError(
        await dirtybit(["serve", "--listen", "localhost", s[0]]),
        2,
        "HOST:PORT",
      );
      assert.ok(!await exists(socket), "nothing listens after bad input");
    });

    await t.step("TCP: --listen HOST:0 serves on a free port", async () => {
      const served = await serve(["--listen", "127.0.0.1:0", "--name", "disk", s[0], s[1]]);
      try {
        assert.match(served.uri, /^nbd:\/\/127\.0\.0\.1:\d+\/disk$/);
        await dirtybitOk(["restore", "--out", at("r1.raw"), s[0], s[1]]);
        await assertSameImage(served.uri, at("r1.raw"));
      } finally {
        assert.equal(await served.stop(), 0);
      }
    });
  });
});
