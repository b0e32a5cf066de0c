/**
 * `direct`: QEMU's NBD server started on the host's address, TCP port
 * `nbd_port`, read directly (no encryption, no authentication: a segregated
 * backup network only) and stopped after the job.
 *
 * @module
 */
import { SourceError, wrapError } from "../core/errors.ts";
import { type AccessMode, exportPath } from "./access_mode.ts";

export const directMode: AccessMode = {
  name: "direct",
  async openDataPath(_host, qmp, { scratch, address, port }) {
    try {
      await qmp.execute("nbd-server-start", {
        addr: { type: "inet", data: { host: address, port: String(port) } },
      });
    } catch (err) {
      throw wrapError(
        err,
        SourceError,
        `cannot start QEMU's NBD server on ${address}:${port}: ${(err as Error).message}; ` +
          "check nbd_port",
      );
    }
    const hostPart = address.includes(":") ? `[${address}]` : address;
    return {
      job: {
        // The server runs already, so the point in time uses it; this path only names it.
        nbdSocket: `${scratch}/tcp-${port}`,
        reachExport: (uri) => Promise.resolve(`nbd://${hostPart}:${port}/${exportPath(uri)}`),
      },
      close: async () => void await qmp.execute("nbd-server-stop"),
    };
  },
};
