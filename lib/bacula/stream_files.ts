/**
 * Restore targets that write a job's dirtybit streams as files, as they
 * are, not applied: the staging of a cross-restore and `restore_as=streams`.
 * Each disk's streams must come in chain order, as for a restore into an
 * image; a file appears under its name only once it is complete and checked.
 *
 * @module
 */
import { checkChainOrder } from "../stream/chain.ts";
import type { StreamHeader } from "../stream/format.ts";
import { indexStream } from "../stream/stream_index.ts";
import { readStreamHeader } from "../crossrestore/chains.ts";
import type { EngineRestoreTarget } from "./engine_port.ts";

/** The stream files of one restore job. */
export class StreamFiles {
  readonly #files: string[] = [];
  /** Last stream written per disk: each new one must follow it. */
  readonly #last = new Map<string, StreamHeader>();

  /**
   * `indexed`: each file's records are verified and its index written
   * beside it (STREAM.idx), so that `serve` starts at once; else only its
   * header is checked.
   */
  constructor(readonly indexed: boolean) {}

  /** The files written so far, in job order. */
  get files(): readonly string[] {
    return this.#files;
  }

  /** A target that writes one stream to `path`. */
  target(path: string): EngineRestoreTarget {
    return {
      apply: async (stream) => {
        let bytes = 0;
        const counted = stream.pipeThrough(
          new TransformStream<Uint8Array, Uint8Array>({
            transform(chunk, out) {
              bytes += chunk.length;
              out.enqueue(chunk);
            },
          }),
        );
        // Written aside and renamed once checked: a cut-off job leaves no
        // file that looks like a whole stream.
        const partial = `${path}.partial`;
        try {
          await Deno.writeFile(partial, counted, { mode: 0o600 });
          const header = this.indexed
            ? (await indexStream(partial)).header
            : await readStreamHeader(partial);
          checkChainOrder(this.#last.get(header.disk) ?? null, header);
          await Deno.rename(partial, path);
          if (this.indexed) await Deno.rename(`${partial}.idx`, `${path}.idx`);
          this.#last.set(header.disk, header);
          this.#files.push(path);
          return { backupId: header.backupId, level: header.level, bytes };
        } catch (err) {
          await Deno.remove(partial).catch(() => {});
          await Deno.remove(`${partial}.idx`).catch(() => {});
          throw err;
        }
      },
      close: () => Promise.resolve(),
    };
  }
}
