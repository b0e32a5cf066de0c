import assert from "node:assert/strict";
import { formatDuration, formatRate, ProgressView, summaryLine, timing } from "./progress_view.ts";

const MiB = 1 << 20;
const T0 = Date.UTC(2026, 11, 3, 12, 0, 0);

Deno.test("formatDuration and formatRate", () => {
  assert.equal(formatDuration(4.4), "4 s");
  assert.equal(formatDuration(185), "3m05s");
  assert.equal(formatDuration(7620), "2h07m");
  assert.equal(formatRate(123_456_789), "123 MB/s");
  assert.equal(formatRate(2_500_000), "2.5 MB/s");
  assert.equal(formatRate(0), "- MB/s");
});

Deno.test("ProgressView: a line per running item, a total with rate, elapsed and ETA", () => {
  const v = new ProgressView("backup", T0);
  v.update("vda", 0, 100 * MiB, T0);
  v.update("vdb", 0, 100 * MiB, T0);
  v.update("vda", 50 * MiB, 100 * MiB, T0 + 5000);
  v.update("vdb", 100 * MiB, 100 * MiB, T0 + 5000);
  assert.deepEqual(v.lines(T0 + 5000), [
    "vda: 50% 50.0 MiB of 100.0 MiB, 10.5 MB/s, elapsed 5 s, ETA 5 s",
    "backup total: 75% 150.0 MiB of 200.0 MiB, 31.5 MB/s, elapsed 5 s, ETA 2 s",
  ]);
  assert.equal(
    v.logLine(T0 + 5000),
    "2026-12-03T12:00:05.000Z backup: 75% 150.0 MiB of 200.0 MiB, 31.5 MB/s, elapsed 5 s, ETA 2 s",
  );
  // One item: its total line alone once it is done; unknown sizes show no ETA.
  const one = new ProgressView("restore", T0);
  one.update("s.dbit", 10 * MiB, 10 * MiB, T0 + 2000);
  assert.deepEqual(one.lines(T0 + 2000), [
    "restore total: 100% 10.0 MiB of 10.0 MiB, 5.2 MB/s, elapsed 2 s, ETA 0 s",
  ]);
  const pipe = new ProgressView("restore", T0);
  pipe.update("stdin", 4 * MiB, 0, T0 + 1000);
  assert.deepEqual(pipe.lines(T0 + 1000), ["stdin: 4.0 MiB, 4.2 MB/s, elapsed 1 s"]);
});

Deno.test("summaryLine and timing", () => {
  assert.equal(
    summaryLine({
      what: "backup of vda",
      level: "incremental",
      read: 64 * MiB,
      stored: 16 * MiB,
      streamBytes: 8 * MiB,
      seconds: 2,
    }),
    "backup of vda (incremental): read 64.0 MiB, stored 16.0 MiB, stream 8.0 MiB in 2.00 s, 33.6 MB/s",
  );
  assert.deepEqual(timing(T0, T0 + 4000, 8_000_000), {
    startedAt: "2026-12-03T12:00:00.000Z",
    endedAt: "2026-12-03T12:00:04.000Z",
    seconds: 4,
    bytesPerSecond: 2_000_000,
  });
});
