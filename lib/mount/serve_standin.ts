/**
 * Stand-in for `lib/serve` until it lands: restores the chain to a raw file
 * beside the socket and exports it read-only with qemu-nbd.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { openStreamFile } from "../stream/reader.ts";
import { checkChainOrder } from "../stream/chain.ts";
import { RestoreSession } from "../restore/session.ts";
import { serveImage } from "../qemu/qemu_nbd.ts";

/** Options of {@link startServe}. */
export interface ServeOptions {
  socket?: string;
  name?: string;
  onLog?: (line: string) => void;
}

/** A served chain. */
export interface ServedChain {
  uri: string;
  size: number;
  close(): Promise<void>;
}

/** Serves the disk at the last stream of `streamPaths` over NBD. */
export async function startServe(
  streamPaths: string[],
  opts: ServeOptions = {},
): Promise<ServedChain> {
  const readers = [];
  for (const p of streamPaths) readers.push(await openStreamFile(p));
  for (let i = 1; i < readers.length; i++) {
    checkChainOrder(readers[i - 1].header, readers[i].header);
  }
  const raw = join(dirname(opts.socket ?? "/tmp/x"), "standin.raw");
  const session = await RestoreSession.open({ path: raw, format: "raw", force: true });
  for (const r of readers) await session.applyReader(r);
  const served = await serveImage(raw, { format: "raw", readOnly: true, exportName: opts.name });
  return {
    uri: served.uri,
    size: readers[0].header.virtualSize,
    close: async () => {
      await served.close();
      await Deno.remove(raw).catch(() => {});
      await Deno.remove(`${raw}.dbit.json`).catch(() => {});
    },
  };
}
