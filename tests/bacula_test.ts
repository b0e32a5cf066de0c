/**
 * End to end with real Debian Bacula through the stock bpipe plugin: first
 * the harness itself with `cat`, then dirtybit backup/restore of a live
 * qemu-storage-daemon disk, restored job by job and compared with the source.
 *
 * @module
 */
import assert from "node:assert/strict";
import { BaculaLab, bpipeJob, DEBIAN_BACULA, isGood } from "./bacula/harness.ts";

Deno.test({
  name: "bacula harness: bpipe with cat backs up and restores byte for byte",
  async fn() {
    const work = await Deno.makeTempDir({ prefix: "dirtybit-bpipe-cat-" });
    const lab = await BaculaLab.start(DEBIAN_BACULA, [bpipeJob({
      name: "CatJob",
      path: "/cat/data.bin",
      reader: `cat ${work}/source.bin`,
      writer: `sh -c 'cat > ${work}/restored.bin'`,
    })]);
    try {
      const data = crypto.getRandomValues(new Uint8Array(65536)).map((
        b,
        i,
      ) => (i < 1000 ? b : i % 7));
      await Deno.writeFile(`${work}/source.bin`, data);
      const b = await lab.backup("CatJob", "Full");
      assert.ok(isGood(b), `backup job: ${JSON.stringify(b)}`);
      assert.equal(b.bytes, data.length);
      const r = await lab.restore(b.jobId);
      assert.ok(isGood(r), `restore job: ${JSON.stringify(r)}`);
      assert.deepEqual(await Deno.readFile(`${work}/restored.bin`), data);
    } finally {
      await lab.stop();
      await Deno.remove(work, { recursive: true });
    }
  },
});

const MAIN = new URL("../main.ts", import.meta.url).pathname;
// The Deno running the tests: a fresh machine has it under .tools/, not on the FD's PATH.
const DIRTYBIT = `${Deno.execPath()} run -A ${MAIN}`;

Deno.test({
  name:
    "bacula bpipe: Full and Incremental of a live qemu-storage-daemon disk, restored job by job",
  async fn() {
    const { Qsd } = await import("./fixtures/qsd.ts");
    const work = await Deno.makeTempDir({ prefix: "dirtybit-bpipe-" });
    const qsd = await Qsd.start({
      disks: [{ size: 32 << 20, writes: [{ pattern: 0x11, offset: 0, length: 4 << 20 }] }],
    });
    const disk = qsd.disks[0];
    const reader =
      `${DIRTYBIT} backup --qmp ${qsd.qmpSocket} --node ${disk.node} --nbd-socket ${qsd.nbdSocket} --state-dir ${work}/state --out -`;
    const lab = await BaculaLab.start(DEBIAN_BACULA, [bpipeJob({
      name: "VmJob",
      path: "/dirtybit/disk0.dbit",
      reader,
      writer: `${DIRTYBIT} restore --out ${work}/restored.raw -`,
    })]);
    try {
      const full = await lab.backup("VmJob", "Full");
      assert.ok(isGood(full), `full: ${JSON.stringify(full)}`);
      await qsd.guestWrite(0, 0x22, 8 << 20, 1 << 20);
      await qsd.guestWrite(0, 0x33, 1 << 20, 64 << 10);
      const incr = await lab.backup("VmJob", "Incremental");
      assert.ok(isGood(incr), `incremental: ${JSON.stringify(incr)}`);
      assert.ok(
        incr.bytes < full.bytes,
        `incremental ${incr.bytes} B should be smaller than full ${full.bytes} B`,
      );
      for (const job of [full, incr]) {
        const r = await lab.restore(job.jobId);
        assert.ok(isGood(r), `restore of ${job.jobId}: ${JSON.stringify(r)}`);
      }
      const cmp = await new Deno.Command("qemu-img", {
        args: ["compare", "-U", "-f", "qcow2", "-F", "raw", disk.image, `${work}/restored.raw`],
      }).output();
      assert.equal(
        cmp.code,
        0,
        new TextDecoder().decode(cmp.stdout) + new TextDecoder().decode(cmp.stderr),
      );
    } finally {
      await lab.stop();
      await qsd.stop();
      await Deno.remove(work, { recursive: true });
    }
  },
});
