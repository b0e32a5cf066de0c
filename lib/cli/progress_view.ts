/**
 * What progress output says: pure rendering of the progress a command's
 * engine reports (bytes done of total per disk or stream) into terminal
 * lines, timestamped log lines and the one-line summary. No I/O and no
 * clock: times come in as milliseconds, so it is tested as it is.
 *
 * @module
 */
import { formatBytes } from "../core/bytes.ts";

/** One unit of work (a disk, a stream): bytes done of total since `startedAt`. */
interface Item {
  name: string;
  done: number;
  total: number;
  startedAt: number;
  finished: boolean;
}

/** `12 s`, `3m05s`, `2h07m`. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/** Bytes per second for humans (decimal MB/s, as disks and links are rated). */
export function formatRate(bytesPerSecond: number): string {
  if (!Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0) return "- MB/s";
  const mb = bytesPerSecond / 1e6;
  return `${mb >= 100 ? mb.toFixed(0) : mb.toFixed(1)} MB/s`;
}

/** `done of total (pct), rate, elapsed, ETA` of one item or the total. */
function describe(done: number, total: number, seconds: number): string {
  if (total <= 0) {
    // Size unknown (a pipe): what went by and how fast.
    return `${formatBytes(done)}, ${formatRate(seconds > 0 ? done / seconds : 0)}, elapsed ${
      formatDuration(seconds)
    }`;
  }
  const pct = total > 0 ? Math.min(100, Math.floor((done / total) * 100)) : 100;
  const rate = seconds > 0 ? done / seconds : 0;
  const eta = rate > 0 && total > done ? formatDuration((total - done) / rate) : "-";
  return `${pct}% ${formatBytes(done)} of ${formatBytes(total)}, ${formatRate(rate)}, elapsed ${
    formatDuration(seconds)
  }, ETA ${done >= total ? "0 s" : eta}`;
}

/** The progress of one command: its items and the total. */
export class ProgressView {
  readonly #what: string;
  readonly #startedAt: number;
  readonly #items = new Map<string, Item>();
  /** When any item last moved: where an item that starts moving now began. */
  #lastUpdate: number;

  /** `what` names the command in every line ("backup", "restore"). */
  constructor(what: string, startedAt: number) {
    this.#what = what;
    this.#startedAt = startedAt;
    this.#lastUpdate = startedAt;
  }

  /** Records that `name` has `done` of `total` bytes at time `now` (ms). */
  update(name: string, done: number, total: number, now: number): void {
    const item = this.#items.get(name) ??
      { name, done: 0, total, startedAt: now, finished: false };
    // Items may be listed (0 done) long before their turn: their time starts when they move.
    if (item.done === 0 && done > 0) item.startedAt = this.#lastUpdate;
    this.#lastUpdate = now;
    item.done = done;
    item.total = total;
    item.finished = total > 0 && done >= total;
    this.#items.set(name, item);
  }

  /** Bytes done and total over every item. */
  totals(): { done: number; total: number } {
    let done = 0;
    let total = 0;
    for (const i of this.#items.values()) {
      done += i.done;
      total += i.total;
    }
    return { done, total };
  }

  /** Terminal lines: one per item still running, then the total (when there are several). */
  lines(now: number): string[] {
    const running = [...this.#items.values()].filter((i) => !i.finished);
    const out = running.map((i) =>
      `${i.name}: ${describe(i.done, i.total, (now - i.startedAt) / 1000)}`
    );
    const { done, total } = this.totals();
    if (this.#items.size > 1 || out.length === 0) {
      out.push(`${this.#what} total: ${describe(done, total, (now - this.#startedAt) / 1000)}`);
    }
    return out;
  }

  /** One timestamped line for logs (no terminal): the total. */
  logLine(now: number): string {
    const { done, total } = this.totals();
    return `${new Date(now).toISOString()} ${this.#what}: ${
      describe(done, total, (now - this.#startedAt) / 1000)
    }`;
  }
}

/** What the one-line summary at the end of a command reports. */
export interface Summary {
  /** The command and its object, e.g. "backup of disk0". */
  readonly what: string;
  readonly level?: string;
  /** Disk bytes read (or applied). */
  readonly read: number;
  /** Data bytes stored (after change detection), when the command stores any. */
  readonly stored?: number;
  /** Bytes of the stream written or read. */
  readonly streamBytes?: number;
  readonly seconds: number;
}

/** `dirtybit: backup of disk0 (full): read 1.5 GiB, stored 1.2 GiB, stream 800.0 MiB in 12 s, 128 MB/s`. */
export function summaryLine(s: Summary): string {
  const parts = [`read ${formatBytes(s.read)}`];
  if (s.stored !== undefined) parts.push(`stored ${formatBytes(s.stored)}`);
  if (s.streamBytes !== undefined) parts.push(`stream ${formatBytes(s.streamBytes)}`);
  const level = s.level ? ` (${s.level})` : "";
  return `${s.what}${level}: ${parts.join(", ")} in ${
    s.seconds < 10 ? `${s.seconds.toFixed(2)} s` : formatDuration(s.seconds)
  }, ${formatRate(s.seconds > 0 ? s.read / s.seconds : 0)}`;
}

/** Start and end (ISO 8601), duration and throughput for `--json` reports. */
export function timing(startedAt: number, endedAt: number, bytes: number) {
  const seconds = (endedAt - startedAt) / 1000;
  return {
    startedAt: new Date(startedAt).toISOString(),
    endedAt: new Date(endedAt).toISOString(),
    seconds,
    bytesPerSecond: seconds > 0 ? Math.round(bytes / seconds) : null,
  };
}
