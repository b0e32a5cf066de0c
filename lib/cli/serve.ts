/**
 * `dirtybit serve`: exports a backup chain as a read-only NBD disk until
 * SIGINT or SIGTERM (lib/serve/mod.ts does the work).
 *
 * @module
 */
import type { Command } from "./command.ts";
import { catchStopSignals } from "./stop_signals.ts";
import { parseFlags } from "./args.ts";
import { UsageError } from "../core/errors.ts";
import { formatBytes } from "../core/bytes.ts";
import { startServe } from "../serve/mod.ts";

const HELP = `
usage: dirtybit serve (--socket PATH | --listen HOST:PORT) [--name EXPORT] STREAM...

Serves the disk as it was at the last of the STREAMs (a full, then its
incrementals in order, or a full and a differential) over NBD, read-only,
straight from the stream files, until SIGINT or SIGTERM. Any NBD client
reads it: qemu-img, qemu (-blockdev nbd / a qcow2 overlay), nbdcopy, nbdinfo,
nbdfuse. Every payload is checked against its checksum before it is served: a
corrupt one fails that read (EIO) and is logged, never served.

An index of each stream's records is kept beside it (STREAM.idx), so the next
serve of the same streams starts at once; it is rebuilt when it is stale.

  --socket PATH        Unix socket to listen on (mode 0600; a stale one is replaced)
  --listen HOST:PORT   TCP address to listen on instead (no TLS, no auth: loopback
                       or a trusted network only); port 0 picks a free port
  --name EXPORT        export name (default: the disk's name in the streams)

The URI to connect to is printed on stdout, log lines on stderr.
`;

/** Parses `HOST:PORT` (`[V6]:PORT` for IPv6). */
function hostPort(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new UsageError(`serve: --listen must be HOST:PORT (e.g. 127.0.0.1:10809), not '${text}'`);
  }
  return { host: m[1] ?? m[2], port };
}

function log(line: string): void {
  console.error(`${new Date().toISOString()} dirtybit serve: ${line}`);
}

export const serveCommand: Command = {
  name: "serve",
  summary: "export a backup chain as a read-only NBD disk (instant recovery)",
  async run(args) {
    const parsed = parseFlags("serve", args, {
      socket: { type: "string", path: true },
      listen: { type: "string" },
      name: { type: "string" },
    }, HELP);
    if (!parsed) return 0;
    const { values, positionals } = parsed;
    if ((values.socket === undefined) === (values.listen === undefined)) {
      throw new UsageError("serve: give one of --socket PATH or --listen HOST:PORT");
    }
    if (positionals.length === 0) throw new UsageError("serve: name at least one STREAM");
    if (positionals.includes("-")) {
      throw new UsageError("serve: reads stream files, not '-' (standard input)");
    }
    const listen = values.listen === undefined ? undefined : hostPort(values.listen);
    // Signals are caught from the start: one while indexing must not kill it half done.
    const stop = catchStopSignals();
    try {
      const handle = await startServe(positionals, {
        socket: values.socket,
        listen,
        name: values.name,
        onLog: (_kind, text) => log(text),
      });
      log(`serving ${handle.name} (${formatBytes(handle.size)}) read-only at ${handle.uri}`);
      console.log(handle.uri);
      await stop.stopped;
      log("stopping");
      await handle.close();
      return 0;
    } finally {
      stop.close();
    }
  },
};
