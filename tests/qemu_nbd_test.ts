/**
 * `serveImage` against a real qemu-nbd: the server of a process that was
 * killed (SIGKILL, so it could not close it) dies with it, so the image's
 * write lock is free for the next `serveImage`. A server whose owner is alive
 * is left alone.
 */
import { deepStrictEqual as assertEquals, ok as assert, rejects } from "node:assert/strict";
import { serveImage } from "../lib/qemu/qemu_nbd.ts";
import { NbdClient } from "../lib/nbd/client.ts";
import { SourceError } from "../lib/core/errors.ts";
import { delay } from "../lib/core/async.ts";

const MODULE = new URL("../lib/qemu/qemu_nbd.ts", import.meta.url).href;

async function running(pid: number): Promise<boolean> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

async function withImage(fn: (image: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-qemu-nbd-test-" });
  try {
    const image = `${dir}/disk.qcow2`;
    const out = await new Deno.Command("qemu-img", {
      args: ["create", "-q", "-f", "qcow2", image, "4M"],
    }).output();
    assert(out.success);
    await fn(image);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("the qemu-nbd of a killed owner dies with it; the next serveImage writes the image", () =>
  withImage(async (image) => {
    // A process serves the image writable, prints qemu-nbd's pid, and is killed.
    const owner = new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `import { serveImage } from "${MODULE}";
         const s = await serveImage(Deno.args[0], { format: "qcow2", readOnly: false });
         console.log(s.pid);
         await new Promise(() => setInterval(() => {}, 1000));`,
        image,
      ],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = owner.stdout.getReader();
    const { value } = await reader.read();
    const orphan = Number(new TextDecoder().decode(value).trim());
    owner.kill("SIGKILL");
    await owner.status;
    reader.releaseLock();
    await owner.stdout.cancel();
    for (let i = 0; i < 100 && await running(orphan); i++) await delay(20);
    assert(!(await running(orphan)), "qemu-nbd outlived its killed owner");

    const served = await serveImage(image, { format: "qcow2", readOnly: false });
    try {
      const client = await NbdClient.connect({ uri: served.uri });
      assertEquals(client.size, 4 << 20);
      await client.close();
    } finally {
      await served.close();
    }
  }));

Deno.test("serveImage leaves a server whose owner is alive; close removes its run directory", () =>
  withImage(async (image) => {
    const first = await serveImage(image, { format: "qcow2", readOnly: true });
    const second = await serveImage(image, { format: "qcow2", readOnly: true });
    try {
      assert(await running(first.pid) && await running(second.pid));
    } finally {
      await first.close();
      await second.close();
    }
    assert(!(await running(first.pid)));
    for (const s of [first, second]) {
      await rejects(Deno.stat(s.pidFile), Deno.errors.NotFound);
    }
  }));

Deno.test("serveImage: an image qemu-nbd cannot open is a one-line SourceError", () =>
  withImage(async (image) => {
    await Deno.writeFile(image, new Uint8Array(4096)); // not qcow2 anymore
    let message = "";
    try {
      await serveImage(image, { format: "qcow2", readOnly: true });
    } catch (err) {
      assert(err instanceof SourceError, String(err));
      message = (err as Error).message;
    }
    assert(
      message.startsWith("qemu-nbd cannot serve") && !message.includes("\n"),
      message,
    );
  }));
