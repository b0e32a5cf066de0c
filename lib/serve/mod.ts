/**
 * Serving a backup chain as a disk: `startServe` indexes the chain's stream
 * files (lib/stream/stream_index.ts), opens it for random reads (every
 * payload checked as it is read) and exports the disk as it was at the last
 * stream, read-only, through dirtybit's NBD server on a Unix socket or TCP.
 * The use case behind `dirtybit serve`, `mount` and live restore.
 *
 * @module
 */
import { resolve } from "node:path";
import { BusyError, describeError, SourceError, UsageError, wrapError } from "../core/errors.ts";
import { fitsUnixSocket, UNIX_SOCKET_PATH_MAX } from "../core/files.ts";
import type { Log } from "../core/log.ts";
import { ChainSource } from "../stream/chain_source.ts";
import { indexChain } from "../stream/stream_index.ts";
import { type NbdExport, NbdServer } from "../nbd/server.ts";

export interface ServeOptions {
  /** Unix socket to listen on (a stale one left by a crash is replaced). */
  readonly socket?: string;
  /** TCP address to listen on instead; port 0 picks a free one (see `uri`). */
  readonly listen?: { readonly host: string; readonly port: number };
  /** Export name (default: the disk's name in the streams); clients may also ask for "". */
  readonly name?: string;
  /** Told of clients, rebuilt indexes and failed reads. */
  readonly onLog?: Log;
  /** Bytes of decoded records kept for reads to come (default 8 MiB). */
  readonly cacheBytes?: number;
}

/** A running server. */
export interface ServeHandle {
  /** Where clients connect: `nbd+unix:///NAME?socket=PATH` or `nbd://HOST:PORT/NAME`. */
  readonly uri: string;
  /** The export's size in bytes (the disk's virtual size). */
  readonly size: number;
  /** The export name. */
  readonly name: string;
  /** Stops the server, disconnects its clients, removes the socket. Safe to call twice. */
  close(): Promise<void>;
}

/**
 * Starts serving the chain `streamPaths` (the full first, then each
 * incremental, or the full and a differential). Bad input (a missing file,
 * not a chain, wrong order) is refused before anything listens.
 */
export async function startServe(
  streamPaths: readonly string[],
  opts: ServeOptions,
): Promise<ServeHandle> {
  if ((opts.socket === undefined) === (opts.listen === undefined)) {
    throw new UsageError((p) =>
      `serve: give one of ${p("socket")} PATH or ${p("listen")} HOST:PORT`
    );
  }
  if (opts.socket !== undefined && !fitsUnixSocket(resolve(opts.socket))) {
    const path = resolve(opts.socket);
    throw new UsageError((p) =>
      `serve: ${p("socket")} ${path} is ${
        new TextEncoder().encode(path).length
      } bytes long, over the ${UNIX_SOCKET_PATH_MAX} bytes a Unix socket path can have: choose a shorter path (e.g. under /tmp or /run)`
    );
  }
  const log = opts.onLog ?? (() => {});
  const indexes = await indexChain(streamPaths, log);
  const chain = await ChainSource.fromIndexes(streamPaths, indexes, opts.cacheBytes);
  const name = opts.name ?? indexes.at(-1)!.header.disk;
  const exp: NbdExport = {
    name,
    size: chain.size,
    description: `dirtybit backup ${indexes.at(-1)!.header.backupId} of ${name}`,
    allocation: (offset, length) => chain.allocation(offset, length),
    read: (offset, length) => chain.lend(offset, length),
  };
  let listening: { listener: Deno.Listener; uri: string; socket?: string };
  try {
    listening = opts.socket !== undefined
      ? await listenUnix(resolve(opts.socket), name)
      : listenTcp(opts.listen!.host, opts.listen!.port, name);
  } catch (err) {
    await chain.close();
    throw err;
  }
  const server = NbdServer.start(listening.listener, exp, log);
  let closing: Promise<void> | undefined;
  return {
    uri: listening.uri,
    size: chain.size,
    name,
    close: () =>
      closing ??= (async () => {
        await server.close();
        await chain.close();
        if (listening.socket) await Deno.remove(listening.socket).catch(() => {});
      })(),
  };
}

/** Listens on Unix socket `path`, replacing one no server answers on any more. */
async function listenUnix(
  path: string,
  name: string,
): Promise<{ listener: Deno.Listener; uri: string; socket: string }> {
  const existing = await Deno.lstat(path).catch(() => null);
  if (existing) {
    if (!existing.isSocket) {
      throw new UsageError((p) =>
        `serve: ${path} exists and is not a socket: choose another ${p("socket")}`
      );
    }
    const alive = await Deno.connect({ transport: "unix", path }).then((c) => {
      c.close();
      return true;
    }, () => false);
    if (alive) throw new BusyError(`serve: a server already listens on ${path}`);
    await Deno.remove(path);
  }
  try {
    const listener = Deno.listen({ transport: "unix", path });
    return {
      listener,
      uri: `nbd+unix:///${encodeURIComponent(name)}?socket=${path}`,
      socket: path,
    };
  } catch (err) {
    throw wrapError(err, SourceError, `serve: cannot listen on ${path}: ${describeError(err)}`);
  }
}

function listenTcp(
  host: string,
  port: number,
  name: string,
): { listener: Deno.Listener; uri: string } {
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: host, port, transport: "tcp" });
  } catch (err) {
    throw wrapError(
      err,
      SourceError,
      `serve: cannot listen on ${host}:${port}: ${describeError(err)}`,
    );
  }
  const { port: bound } = listener.addr;
  const shown = host.includes(":") ? `[${host}]` : host;
  return { listener, uri: `nbd://${shown}:${bound}/${encodeURIComponent(name)}` };
}
