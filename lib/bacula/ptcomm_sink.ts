/**
 * The stream sink of a Bacula backup: each disk's stream is one file sent to
 * the FD over PTCOMM (its attributes, then `DATA` and the stream in data
 * packets, then EOD). Files go onto the wire one at a time, in the order the
 * engine asked for sinks. Nothing to commit or undo here: the FD and the
 * Director decide what a failed job keeps.
 *
 * @module
 */
import type { Channel } from "./channel.ts";
import { DataPacker } from "./ptcomm.ts";
import { chunkReleasingSink } from "../stream/writer.ts";
import { passThroughSink, type StreamSink } from "../sinks/sink.ts";

/** The files of one backup job on its channel. */
export class PtcommFiles {
  readonly #ch: Channel;
  #last: Promise<void> = Promise.resolve();

  constructor(ch: Channel) {
    this.#ch = ch;
  }

  /** A sink for the next file; `sendAttributes` starts it on the wire once its turn comes. */
  sink(sendAttributes: () => Promise<void>): StreamSink {
    const ch = this.#ch;
    const ready = this.#last;
    let release!: () => void;
    this.#last = new Promise((r) => (release = r));
    const packer = new DataPacker(ch.writer);
    let opened: Promise<void> | null = null;
    const open = () =>
      opened ??= (async () => {
        await ch.guard(ready);
        await sendAttributes();
        await ch.send("DATA");
      })();
    // The packer copies every chunk into its packets before a write resolves.
    return passThroughSink(chunkReleasingSink(
      new WritableStream<Uint8Array>({
        async write(chunk) {
          await open();
          await ch.guard(packer.push(chunk));
        },
        async close() {
          await open();
          await ch.guard(packer.flush());
          await ch.eod();
          release();
        },
      }),
    ));
  }
}
