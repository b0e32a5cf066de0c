/**
 * Where a backup stream goes: one file per kind behind {@link StreamSink}
 * (like nbdcopy's `*-ops.c`), chosen for `--out` through registry.ts.
 *
 * The engine writes and closes each disk's `writable`; once every disk of
 * the job is written it commits every sink, and only then the checkpoint,
 * so an accepted backup never lacks its stream. A failure anywhere discards
 * every sink instead: a failed job leaves no stream that looks accepted.
 *
 * @module
 */
import type { RunRecord } from "../core/run_record.ts";

/** One disk's stream destination. */
export interface StreamSink {
  /** The stream's bytes; closed by the writer once the stream is complete. */
  readonly writable: WritableStream<Uint8Array>;
  /** The file the stream is in once committed, if a regular file. */
  readonly path?: string;
  /** Makes the complete stream the accepted one (before the checkpoint commit). */
  commit(): Promise<void>;
  /** Removes what this sink wrote, complete or committed (the job failed). */
  discard(): Promise<void>;
}

/**
 * A kind of destination `--out` can name (a directory or file, `-`, a
 * device). The first kind in the registry that claims a value takes it.
 */
export interface SinkKind {
  readonly name: string;
  /** Whether `out` names a destination of this kind. */
  claims(out: string): Promise<boolean>;
  /** Opens `out` for one job. */
  open(out: string): Promise<SinkDestination>;
}

/** An opened `--out` destination. */
export interface SinkDestination {
  /** A directory that takes one stream file per disk; null if it takes one disk's stream. */
  readonly dir: string | null;
  /**
   * The sink of one disk; `fileName` is its stream file's name in `dir`. A
   * file it creates until committed goes into `run` first, so that the next
   * run removes it if this one is killed.
   */
  sink(fileName: string, run: RunRecord): Promise<StreamSink>;
}

/** The sinks of one job: committed together, or all discarded. */
export class JobSinks {
  readonly #sinks: StreamSink[] = [];

  /** Keeps the sink `opening` resolves to for the job's commit or discard. */
  async add(opening: Promise<StreamSink>): Promise<StreamSink> {
    const sink = await opening;
    this.#sinks.push(sink);
    return sink;
  }

  /** Commits every sink, in the order they were opened. */
  async commit(): Promise<void> {
    for (const sink of this.#sinks) await sink.commit();
  }

  /** Discards every sink (errors are ignored: the job's own error is the one to report). */
  async discard(): Promise<void> {
    for (const sink of this.#sinks) await sink.discard().catch(() => {});
  }
}

/** A sink that has nothing to commit or undo (a pipe, a device, a protocol channel). */
export function passThroughSink(writable: WritableStream<Uint8Array>): StreamSink {
  return {
    writable,
    commit: () => Promise.resolve(),
    discard: () => Promise.resolve(),
  };
}
