// deno-lint-ignore-file no-control-regex -- these tests are about terminal control sequences
import assert from "node:assert/strict";
import { Progress } from "./progress.ts";

/** A fake stderr and clock. */
function sinks(terminal: boolean) {
  let text = "";
  let now = Date.UTC(2026, 11, 3, 12, 0, 0);
  return {
    sinks: {
      stderr: {
        writeSync(b: Uint8Array) {
          text += new TextDecoder().decode(b);
          return b.length;
        },
        isTerminal: () => terminal,
      },
      now: () => now,
    },
    advance: (ms: number) => (now += ms),
    text: () => text,
  };
}

const summary = { what: "backup of vda", level: "full", read: 100, seconds: 30 };

Deno.test("Progress without a terminal: an interval line, no control characters, the summary", async () => {
  const s = sinks(false);
  const p = await Progress.start("backup", { "progress-interval": "10" }, s.sinks);
  p.info("not shown without a terminal");
  for (let i = 1; i <= 30; i++) {
    s.advance(1000);
    p.update("vda", i * 10, 300);
  }
  p.warn("always shown");
  p.finish(summary);
  const lines = s.text().trimEnd().split("\n");
  assert.equal(lines.length, 5, s.text());
  assert.match(lines[0], /^2026-12-03T12:00:10.000Z backup: 33% .* ETA 20 s$/);
  assert.equal(lines[3], "dirtybit: warning: always shown");
  assert.match(lines[4], /^backup of vda \(full\): read 100 B in 30 s/);
  assert.doesNotMatch(s.text(), /[\x00-\x09\x0b-\x1f]/);
});

Deno.test("Progress on a terminal: redrawn live lines, messages above them; --quiet silences", async () => {
  const s = sinks(true);
  const p = await Progress.start("backup", {}, s.sinks);
  s.advance(1000);
  p.update("vda", 50, 100);
  p.info("hello");
  s.advance(1000);
  p.update("vda", 100, 100);
  p.finish(summary);
  assert.match(s.text(), /\r\x1b\[Jvda: 50% .*, elapsed 1 s, ETA 1 s/);
  assert.match(s.text(), /hello\n/);
  assert.match(s.text(), /backup total: 100% .* ETA 0 s\r\x1b\[Jbackup of vda/);
  const q = sinks(true);
  const quiet = await Progress.start("backup", { quiet: true }, q.sinks);
  quiet.update("vda", 100, 100);
  quiet.finish(summary);
  assert.equal(q.text(), "");
});

Deno.test("Progress.say: shown with or without a terminal, silenced by --quiet, logged as given", async () => {
  const s = sinks(false);
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-test-" });
  try {
    const log = `${dir}/log`;
    const p = await Progress.start("replicate push", { "log-file": log }, s.sinks);
    p.say("vda: cycle 1 confirmed", "dirtybit replicate: vda: cycle 1 confirmed");
    p.finish(summary);
    assert.match(s.text(), /^dirtybit replicate: vda: cycle 1 confirmed\nbackup of vda/);
    assert.match(
      await Deno.readTextFile(log),
      /\n2026-12-03T12:00:00.000Z vda: cycle 1 confirmed\n/,
    );
    const q = sinks(false);
    const quiet = await Progress.start("replicate push", { quiet: true }, q.sinks);
    quiet.say("not shown");
    quiet.finish(summary);
    assert.equal(q.text(), "");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
