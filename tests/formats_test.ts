/**
 * Integration tests of the append-only image writers: every writer writes
 * through a real pipe, and qemu-img (check, compare against a raw copy of the
 * source, info) judges the result. Corrupted outputs must be rejected, which
 * shows these validators can fail.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { type Chunk, MemorySource, pattern } from "./formats/memory_source.ts";
import { check, compare, info, run, saveReference, writeThroughPipe } from "./formats/oracle.ts";
import { getImageWriter, imageWriters } from "../lib/formats/registry.ts";
import type { ImageWriter } from "../lib/formats/writer.ts";
import { flatExtentName } from "../lib/formats/vmdk.ts";
import type { StreamHeaderInit } from "../lib/stream/format.ts";
import { StreamWriter } from "../lib/stream/writer.ts";
import { startQemuNbd } from "./fixtures/qemu_nbd.ts";
import { convertToPipe } from "./formats/cli.ts";
import { dirtybit } from "./fixtures/cli.ts";
import { withDir } from "./helpers.ts";

const MiB = 1 << 20;
const GiB = 1 << 30;

/** Formats qemu-img can `check`. */
const CHECKABLE = new Set(["qcow2", "vmdk", "vhdx"]);

/** Virtual size qemu-img reports: sector formats round up to 512 bytes. */
function expectedSize(w: ImageWriter, size: number): number {
  return w.format === "raw" || w.format === "qcow2" ? size : Math.ceil(size / 512) * 512;
}

function fileOf(dir: string, w: ImageWriter): string {
  return `${dir}/out-${w.subformat}.${w.format}`;
}

/** Writes through a pipe and validates with qemu-img; returns the image path. */
async function writeAndValidate(
  dir: string,
  w: ImageWriter,
  src: MemorySource,
  options = {},
  windows?: { offset: number; length: number }[],
): Promise<string> {
  const ref = await saveReference(src, dir);
  const path = fileOf(dir, w);
  const fileName = path.split("/").pop()!;
  const report = await writeThroughPipe(
    w,
    src,
    w.subformat === "vmfs" ? `${dir}/${flatExtentName(fileName)}` : path,
    { ...options, fileName },
  );
  for (const c of report.companions) await Deno.writeFile(`${dir}/${c.name}`, c.bytes);
  const what = `${w.format}/${w.subformat} size ${src.size}`;
  if (CHECKABLE.has(w.format)) {
    const c = await check(w.format, path);
    assert(c.ok, `${what}: qemu-img check: ${c.out}`);
  }
  for (const win of windows ?? [undefined]) {
    const cmp = await compare(ref, w.format, path, win);
    assert(
      cmp.ok && cmp.out.includes("identical"),
      `${what}: compare ${JSON.stringify(win)}: ${cmp.out}`,
    );
  }
  const i = await info(w.format, path);
  assertEquals(i.virtualSize, expectedSize(w, src.size), `${what}: virtual size`);
  assertEquals(report.virtualSize, expectedSize(w, src.size));
  return path;
}

/** Data at the start, a zero-filled "allocated" range, the last partial block. */
function mixedSource(size: number): MemorySource {
  const chunks: Chunk[] = [
    { offset: 0, bytes: pattern(3 * 4096 + 100, 1) },
    { offset: 3 * MiB + 512, bytes: pattern(5 * MiB, 2) },
    { offset: 9 * MiB, bytes: new Uint8Array(2 * MiB) },
    { offset: 20 * MiB - 4096, bytes: pattern(70 * 1024, 3) },
    { offset: size - 1536, bytes: pattern(1536, 4) },
  ];
  return new MemorySource(size, chunks);
}

for (const w of imageWriters) {
  const name = `${w.format}/${w.subformat}`;
  Deno.test(`${name}: mixed data, size not a block multiple, data in the last partial block`, () =>
    withDir(async (dir) => {
      await writeAndValidate(dir, w, mixedSource(33 * MiB + 3 * 512));
    }));
  Deno.test(`${name}: empty disk`, () =>
    withDir(async (dir) => {
      await writeAndValidate(dir, w, new MemorySource(8 * MiB, []));
    }));
  Deno.test(`${name}: fully allocated disk`, () =>
    withDir(async (dir) => {
      const size = 6 * MiB + 512;
      await writeAndValidate(
        dir,
        w,
        new MemorySource(size, [{ offset: 0, bytes: pattern(size, 9) }]),
      );
    }));
}

Deno.test("qcow2: 512-byte and 2 MiB clusters", () =>
  withDir(async (dir) => {
    for (const clusterSize of [512, 2 * MiB]) {
      await writeAndValidate(dir, getImageWriter("qcow2"), mixedSource(25 * MiB + 512), {
        clusterSize,
      });
    }
  }));

Deno.test("vhdx: 32 MiB blocks; data beyond the first 4 GiB chunk and in the last partial block", () =>
  withDir(async (dir) => {
    const size = 5 * GiB + 3 * MiB + 512;
    const src = new MemorySource(size, [
      { offset: 1 * MiB, bytes: pattern(MiB, 1) },
      { offset: 4 * GiB - 512, bytes: pattern(MiB, 2) }, // straddles the chunk boundary
      { offset: 4 * GiB + 100 * MiB, bytes: pattern(3 * MiB, 3) },
      { offset: size - 4096, bytes: pattern(4096, 4) },
    ]);
    await writeAndValidate(dir, getImageWriter("vhdx"), src);
    await writeAndValidate(dir, getImageWriter("vhdx"), src, { blockSize: 32 * MiB });
  }));

Deno.test("vmdk streamOptimized: zero grains are skipped on the fly, GTs only where data is", () =>
  withDir(async (dir) => {
    const src = new MemorySource(64 * MiB, [
      { offset: 0, bytes: new Uint8Array(40 * MiB) }, // "allocated" but all zeros
      { offset: 50 * MiB, bytes: pattern(64 * 1024, 5) },
    ]);
    const path = await writeAndValidate(dir, getImageWriter("vmdk", "streamOptimized"), src);
    const size = (await Deno.stat(path)).size;
    assert(size < 200 * 1024, `zero grains were stored: ${size} bytes`);
    const map = await run("qemu-img", ["map", "--output=json", "-f", "vmdk", path]);
    const data = JSON.parse(map.out).filter((e: { data: boolean }) => e.data);
    assertEquals(data.map((e: { start: number }) => e.start), [50 * MiB]);
  }));

for (const fmt of ["qcow2", "vhdx"]) {
  Deno.test(`${fmt}: sparse virtual size over 2 TiB`, () =>
    withDir(async (dir) => {
      const size = 2 * 2 ** 40 + 5 * MiB + 512;
      const src = new MemorySource(size, [
        { offset: 0, bytes: pattern(MiB, 1) },
        { offset: 1.5 * 2 ** 40, bytes: pattern(2 * MiB, 2) },
        { offset: size - 8192, bytes: pattern(8192, 3) },
      ]);
      // Comparing 2 TiB takes qemu-img minutes: compare windows around the data and the end.
      const path = await writeAndValidate(dir, getImageWriter(fmt), src, {}, [
        { offset: 0, length: 8 * MiB },
        { offset: 1.5 * 2 ** 40 - MiB, length: 8 * MiB },
        { offset: size - 16 * MiB, length: 16 * MiB },
      ]);
      assert((await Deno.stat(path)).size < 64 * MiB, "sparse image grew large");
    }));
}

Deno.test("vhd: a disk over 2040 GiB is refused with a one-line error", async () => {
  const src = new MemorySource(2041 * GiB, []);
  const sink = new WritableStream<Uint8Array>();
  let message = "";
  try {
    await getImageWriter("vhd").write(src, sink);
  } catch (err) {
    message = (err as Error).message;
  }
  assert(/at most 2040 GiB/.test(message) && !message.includes("\n"), message);
});

/** Writes an image, applies `corrupt` to its bytes, and returns what qemu-img says. */
async function corrupted(
  dir: string,
  w: ImageWriter,
  corrupt: (bytes: Uint8Array) => Uint8Array,
): Promise<{ check: boolean; open: boolean; compare: boolean; out: string }> {
  const src = mixedSource(24 * MiB);
  const path = await writeAndValidate(dir, w, src);
  await Deno.writeFile(path, corrupt(await Deno.readFile(path)));
  const c = CHECKABLE.has(w.format) ? await check(w.format, path) : { ok: true, out: "" };
  const i = await info(w.format, path);
  const cmp = await compare({ path: `${dir}/src.qcow2`, format: "qcow2" }, w.format, path);
  return { check: c.ok, open: i.ok, compare: cmp.ok, out: c.out + i.out + cmp.out };
}

Deno.test("validators catch corruption: qcow2 truncated by one cluster", () =>
  withDir(async (dir) => {
    const r = await corrupted(dir, getImageWriter("qcow2"), (b) => b.subarray(0, b.length - 65536));
    assert(!r.check && !r.compare, r.out);
  }));

Deno.test("validators catch corruption: vhdx header checksums and region table", () =>
  withDir(async (dir) => {
    const w = getImageWriter("vhdx");
    const flip = (at: number[]) => (b: Uint8Array) => {
      for (const a of at) b[a] ^= 0xff;
      return b;
    };
    let r = await corrupted(dir, w, flip([64 * 1024 + 4, 128 * 1024 + 4]));
    assert(!r.open && r.out.includes("No valid VHDX header"), r.out);
    r = await corrupted(dir, w, flip([192 * 1024 + 4]));
    assert(!r.open, r.out);
    r = await corrupted(dir, w, (b) => b.subarray(0, b.length - MiB));
    assert(!r.check || !r.open, r.out);
  }));

Deno.test("validators catch corruption: vhd footer checksum, vmdk end-of-stream marker and truncation", () =>
  withDir(async (dir) => {
    let r = await corrupted(dir, getImageWriter("vhd"), (b) => {
      b[0 + 40] ^= 1; // original size in the leading footer copy
      return b;
    });
    assert(!r.open && r.out.includes("checksum"), r.out);
    r = await corrupted(dir, getImageWriter("vmdk"), (b) => b.subarray(0, b.length - 512));
    assert(!r.open && r.out.includes("Invalid footer"), r.out);
    r = await corrupted(
      dir,
      getImageWriter("vmdk", "monolithicSparse"),
      (b) => b.subarray(0, b.length - 65536),
    );
    assert(!r.check, r.out);
  }));

Deno.test("dirtybit convert: NBD URI and local qcow2 image, every format through a pipe", () =>
  withDir(async (dir) => {
    const srv = await startQemuNbd({
      size: 48 * MiB + 512,
      writes: [
        { offset: MiB, length: 3 * MiB, pattern: 0xab },
        { offset: 30 * MiB, length: 64 * 1024, pattern: 0x11 },
        { offset: 48 * MiB - 512, length: 1024, pattern: 0x22 },
      ],
    });
    try {
      for (const [fmt, sub] of [["qcow2"], ["vmdk"], ["vhdx", "fixed"], ["vhd"], ["raw"]]) {
        const qfmt = fmt === "vhd" ? "vpc" : fmt;
        for (const from of [srv.uri, srv.imagePath]) {
          const out = `${dir}/c.${fmt}`;
          const args = ["--from", from, "--format", fmt, ...(sub ? ["--subformat", sub] : [])];
          const r = await convertToPipe(args, out);
          assert(r.ok, r.out);
          const cmp = await run("qemu-img", ["compare", "-F", qfmt, srv.imagePath, out]);
          assert(cmp.ok, `${fmt} from ${from}: ${cmp.out}`);
        }
      }
    } finally {
      await srv.stop();
    }
  }));

Deno.test("dirtybit convert: vmdk vmfs writes descriptor + flat extent; bad input gives one-line errors", () =>
  withDir(async (dir) => {
    const src = mixedSource(12 * MiB);
    await src.saveRaw(`${dir}/src.raw`);
    let r = await dirtybit([
      "convert",
      "--from",
      `${dir}/src.raw`,
      "--format",
      "vmdk",
      "--subformat",
      "vmfs",
      "--out",
      `${dir}/vm.vmdk`,
    ]);
    assertEquals(r.code, 0, r.stderr);
    assert((await Deno.readTextFile(`${dir}/vm.vmdk`)).includes('VMFS "vm-flat.vmdk"'));
    assert((await compare(`${dir}/src.raw`, "vmdk", `${dir}/vm.vmdk`)).ok);
    for (
      const [args, code, text] of [
        [["--from", `${dir}/src.raw`, "--format", "qed", "--out", "-"], 2, "unknown format"],
        [
          ["--from", `${dir}/src.raw`, "--format", "qcow2", "--cluster-size", "3K", "--out", "-"],
          2,
          "cluster size",
        ],
        [["--from", `${dir}/nope.img`, "--format", "qcow2", "--out", "-"], 3, "does not exist"],
        [["--format", "qcow2", "--out", "-"], 2, "--from"],
        [
          ["--from", `${dir}/src.raw`, "--format", "vmdk", "--subformat", "vmfs", "--out", "-"],
          2,
          "--descriptor",
        ],
      ] as [string[], number, string][]
    ) {
      r = await dirtybit(["convert", ...args]);
      const said = r.stdout + r.stderr;
      assertEquals(r.code, code, said);
      assert(said.includes(text) && said.trim().split("\n").length === 1, said);
    }
  }));

Deno.test("dirtybit convert --chain equals restore then convert", () =>
  withDir(async (dir) => {
    const size = 20 * MiB;
    const header = (over: Partial<StreamHeaderInit>): StreamHeaderInit => ({
      disk: "vda",
      virtualSize: size,
      blockSize: 65536,
      level: "full",
      backupId: "F",
      parentId: null,
      chainId: "C",
      checkpoint: "cp1",
      compression: "zstd:3",
      metadata: {},
      ...over,
    });
    const disk = new Uint8Array(size);
    const writeStream = async (path: string, h: StreamHeaderInit, changes: Chunk[]) => {
      const file = await Deno.open(path, { write: true, create: true, truncate: true });
      const w = new StreamWriter(file.writable, h, { workers: 1 });
      for (const c of changes) {
        await w.writeData(c.offset, c.bytes);
        disk.set(c.bytes, c.offset);
      }
      await w.finish();
    };
    await writeStream(`${dir}/full.dbs`, header({}), [
      { offset: 0, bytes: pattern(2 * MiB, 1) },
      { offset: 10 * MiB, bytes: pattern(3 * MiB, 2) },
    ]);
    await writeStream(
      `${dir}/inc.dbs`,
      header({ level: "incremental", backupId: "I", parentId: "F", checkpoint: "cp2" }),
      [{ offset: MiB, bytes: pattern(64 * 1024, 3) }, {
        offset: size - 65536,
        bytes: pattern(65536, 4),
      }],
    );
    await Deno.writeFile(`${dir}/expected.raw`, disk);
    const chain = [`${dir}/full.dbs`, `${dir}/inc.dbs`];
    const restored = await dirtybit(["restore", "--out", `${dir}/restored.raw`, ...chain]);
    assertEquals(restored.code, 0, restored.stderr);
    for (const fmt of ["qcow2", "vhdx", "vmdk", "vhd"]) {
      const qfmt = fmt === "vhd" ? "vpc" : fmt;
      const out = `${dir}/chain.${fmt}`, viaRestore = `${dir}/restored.${fmt}`;
      let r = await convertToPipe(["--chain", "--format", fmt, ...chain], out);
      assert(r.ok, r.out);
      r = await convertToPipe(["--from", `${dir}/restored.raw`, "--format", fmt], viaRestore);
      assert(r.ok, r.out);
      // -s: same content and the same allocation, not only the same bytes.
      const same = await run("qemu-img", [
        "compare",
        "-s",
        "-f",
        qfmt,
        "-F",
        qfmt,
        viaRestore,
        out,
      ]);
      assert(same.ok, `${fmt}: chain vs restore-then-convert: ${same.out}`);
      const cmp = await compare(`${dir}/expected.raw`, qfmt, out);
      assert(cmp.ok, cmp.out);
    }
  }));
