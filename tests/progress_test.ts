// deno-lint-ignore-file no-control-regex -- these tests are about terminal control sequences
/**
 * What an operator sees: progress and the summary of a real backup and
 * restore of a qemu-storage-daemon disk under a pseudo-terminal (`script`)
 * and without one (as from cron or systemd), `--quiet`, `--log-file`,
 * `--version`, and `--out -` refused on a terminal.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Qsd } from "./fixtures/qsd.ts";
import { dirtybit, dirtybitOk } from "./fixtures/cli.ts";
import { pseudoRandom } from "./fixtures/bytes.ts";

const MiB = 1 << 20;
const MAIN = fileURLToPath(new URL("../main.ts", import.meta.url));

/** Runs `dirtybit ARGS` under a pseudo-terminal; returns what the terminal showed, and the exit code. */
async function onTerminal(args: string[]): Promise<{ code: number; screen: string }> {
  const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
  const command = [Deno.execPath(), "run", "-A", "--no-check", MAIN, ...args].map(quote).join(" ");
  const out = await new Deno.Command("script", {
    args: ["-q", "-e", "-c", command, "/dev/null"],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, screen: new TextDecoder().decode(out.stdout) };
}

Deno.test("progress: live lines on a terminal, interval lines and a summary without one", async (t) => {
  // zstd:19 on compressible data makes the 12 MiB incremental take seconds (progress lines every
  // second) even on a fast machine.
  const qsd = await Qsd.start({ disks: [{ size: 64 * MiB }] });
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-test-" });
  const at = (name: string) => join(dir, name);
  const backupArgs = (out: string, ...more: string[]) => [
    "backup",
    ...qsd.sourceArgs(),
    ...["--state-dir", at("state"), "--out", out, "--compress", "zstd:19", ...more],
  ];
  try {
    await qsd.guestPwrite(0, pseudoRandom(16 * MiB, 5), 0);

    await t.step("on a terminal: rate and ETA, then the summary", async () => {
      const { code, screen } = await onTerminal(backupArgs(at("full.dbit"), "--level", "full"));
      assert.equal(code, 0, screen);
      assert.match(screen, /\r\x1b\[J(disk0|backup total): \d+% .* MB\/s, elapsed \d+ s, ETA /);
      const last = screen.trimEnd().split(/\r\x1b\[J|\n/).at(-1)!;
      assert.match(last, /^backup of disk0 \(full\): read 16\.0 MiB, stored .* in .* MB\/s$/);
    });

    await t.step(
      "without a terminal: timestamped lines, the summary, no control characters",
      async () => {
        // 4 random bits a byte: compressible, so zstd:19 works on it (slowly) instead of storing it.
        const slow = pseudoRandom(12 * MiB, 6).map((b) => b & 0x0f);
        await qsd.guestPwrite(0, slow, 30 * MiB);
        const log = at("backup.log");
        const r = await dirtybit(
          backupArgs(at("incr.dbit"), "--progress-interval", "1", "--log-file", log, "--json"),
        );
        assert.equal(r.code, 0, r.stderr);
        const lines = r.stderr.trimEnd().split("\n");
        assert.ok(lines.length >= 2, r.stderr);
        for (const l of lines.slice(0, -1)) {
          assert.match(l, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z backup: \d+% .* MB\/s, elapsed/);
        }
        assert.match(lines.at(-1)!, /^backup of disk0 \(incremental\): read 12\.0 MiB, stored/);
        assert.doesNotMatch(r.stderr, /[\x00-\x09\x0b-\x1f]/);
        const [report] = JSON.parse(r.stdout);
        assert.ok(Date.parse(report.startedAt) <= Date.parse(report.endedAt));
        assert.ok(report.seconds > 0 && report.bytesPerSecond > 0);
        const logged = await Deno.readTextFile(log);
        assert.match(logged, /Z backup started\n/);
        assert.match(logged, /Z backup of disk0 \(incremental\): read 12\.0 MiB/);
      },
    );

    await t.step("restore and convert print their summary; --quiet prints nothing", async () => {
      const r = await dirtybit(["restore", "--out", at("r.raw"), at("full.dbit"), at("incr.dbit")]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(
        r.stderr.trimEnd().split("\n").at(-1)!,
        /^restore to .*r\.raw \(full\+incremental\): read 28\.0 MiB/,
      );
      const c = await dirtybit([
        "convert",
        "--from",
        at("r.raw"),
        "--format",
        "qcow2",
        "--out",
        at("c.qcow2"),
      ]);
      assert.equal(c.code, 0, c.stderr);
      assert.match(
        c.stderr,
        /^convert to .*c\.qcow2 \(qcow2\): read 28\.0 MiB, stream .* MB\/s\n$/,
      );
      const q = await dirtybit(["restore", "--quiet", "--out", at("q.raw"), at("full.dbit")]);
      assert.equal(q.code, 0, q.stderr);
      assert.equal(q.stderr, "");
    });

    await t.step("--out - is refused on a terminal", async () => {
      const { code, screen } = await onTerminal(backupArgs("-"));
      assert.equal(code, 2);
      assert.match(screen, /standard output is a terminal: .* binary/);
    });
  } finally {
    await qsd.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--version names dirtybit's version and the stream versions", async () => {
  const out = await dirtybitOk(["--version"]);
  assert.match(
    out,
    /^dirtybit \d+\.\d+\.\d+\nstream format: writes version \d+, reads versions [\d, ]+\n$/,
  );
});
