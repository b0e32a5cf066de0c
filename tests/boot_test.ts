/**
 * The boot-from-a-backup recipe of the README: `dirtybit serve` exports a
 * chain, a qcow2 overlay is created on the export, and QEMU (paused, TCG: no
 * guest needed) starts with a disk on that overlay. Reads through QEMU equal
 * the backup, a write lands in the overlay only, and the stream files are
 * byte for byte what they were.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Qsd } from "./fixtures/qsd.ts";
import { run } from "./helpers.ts";
import { cliCommand, dirtybitOk } from "./fixtures/cli.ts";
import { waitFor } from "./fixtures/kills.ts";
import { QmpSocket } from "../lib/qemu/qmp.ts";

const MiB = 1 << 20;

async function sha256(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

Deno.test("boot recipe: a qcow2 overlay on the served chain opens in QEMU, writes stay in it", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "dirtybit-boot-test-" });
  const at = (name: string) => join(tmp, name);
  const source = await Qsd.start({
    disks: [{ size: 8 * MiB, writes: [{ pattern: 0x51, offset: 0, length: 3 * MiB }] }],
  });
  let serve: Deno.ChildProcess | undefined;
  let vm: Deno.ChildProcess | undefined;
  try {
    const backup = (out: string) =>
      dirtybitOk(["backup", ...source.sourceArgs(), "--state-dir", at("state"), "--out", at(out)]);
    await backup("s0.dbit");
    await source.guestWrite(0, 0x52, 5 * MiB, MiB);
    await backup("s1.dbit");
    await source.snapshotImage(0, at("p1.raw"));
    const chain = [at("s0.dbit"), at("s1.dbit")];
    const sums = await Promise.all(chain.map(sha256));

    const socket = at("backup.sock");
    serve = cliCommand(["serve", "--socket", socket, "--name", "disk0", ...chain], {
      stdout: "null",
      stderr: "null",
    }).spawn();
    await waitFor("the server", 30_000, () => Deno.stat(socket).then(() => true, () => false));
    const uri = `nbd+unix:///disk0?socket=${socket}`;
    await run("qemu-img", [
      "create",
      "-q",
      "-f",
      "qcow2",
      "-F",
      "raw",
      "-b",
      uri,
      at("boot.qcow2"),
    ]);

    const qmpPath = at("vm.qmp");
    vm = new Deno.Command("qemu-system-x86_64", {
      args: [
        ...["-S", "-accel", "tcg", "-m", "32", "-nodefaults", "-display", "none"],
        ...["-blockdev", `driver=file,node-name=f0,filename=${at("boot.qcow2")}`],
        ...["-blockdev", "driver=qcow2,node-name=disk0,file=f0"],
        // share-rw: the test's own writable export of the disk below, beside the guest's device.
        ...["-device", "virtio-blk-pci,drive=disk0,id=vda,share-rw=on"],
        ...["-qmp", `unix:${qmpPath},server=on,wait=off`],
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    await waitFor("QEMU's monitor", 30_000, () => Deno.stat(qmpPath).then(() => true, () => false));
    const qmp = await QmpSocket.connect(qmpPath);
    const nbd = at("vm-nbd.sock");
    await qmp.execute("nbd-server-start", { addr: { type: "unix", data: { path: nbd } } });
    await qmp.execute("block-export-add", {
      type: "nbd",
      id: "vda",
      "node-name": "disk0",
      name: "vda",
      writable: true,
    });
    const vda = `nbd+unix:///vda?socket=${nbd}`;
    await run("qemu-img", ["compare", "-f", "raw", "-F", "raw", vda, at("p1.raw")]);
    await run("qemu-io", ["-f", "raw", "-c", "write -P 0x99 1M 64k", vda]);
    await run("qemu-io", ["-f", "raw", "-c", "read -P 0x99 1M 64k", vda]);
    await qmp.execute("quit").catch(() => {});
    await qmp.close();
    await vm.status;
    vm = undefined;

    // The write is in the overlay; the export (the backup) still reads as it was.
    const map = JSON.parse(await run("qemu-img", ["map", "--output=json", at("boot.qcow2")])) as {
      start: number;
      length: number;
      depth: number;
      data: boolean;
    }[];
    const top = map.filter((m) => m.depth === 0 && m.data);
    assert.deepEqual(top.map((m) => [m.start, m.length]), [[MiB, 64 << 10]]);
    await run("qemu-img", ["compare", "-f", "raw", "-F", "raw", uri, at("p1.raw")]);
    assert.deepEqual(await Promise.all(chain.map(sha256)), sums, "the streams are unchanged");
  } finally {
    if (vm) {
      vm.kill("SIGKILL");
      await vm.status;
    }
    if (serve) {
      serve.kill("SIGTERM");
      await serve.status;
    }
    await source.stop();
    await Deno.remove(tmp, { recursive: true });
  }
});
