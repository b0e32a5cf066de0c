/**
 * `direct`: libvirt's NBD server of a running domain's pull backup on the
 * host's address, TCP port `nbd_port`, read directly (no encryption, no
 * authentication: a segregated backup network only); it ends with the job.
 *
 * @module
 */
import { directPath, type ExportAccess, type NbdAccessMode } from "./access_mode.ts";

/** Default TCP port of the NBD server in direct mode (IANA's NBD port). */
const DEFAULT_NBD_PORT = 10809;

/** Exports on `host`'s TCP `port`, read directly. */
function tcpExports(host: string, port: number): ExportAccess {
  return {
    serve: () => ({
      server: { host, port },
      uri: (name) => `nbd://${hostPart(host)}:${port}/${encodeURIComponent(name)}`,
    }),
    dataPath: directPath,
  };
}

/** An address as the host part of a URI (IPv6 in brackets). */
function hostPart(address: string): string {
  return address.includes(":") ? `[${address}]` : address;
}

/** The `direct` mode (see the module doc). */
export const directMode: NbdAccessMode = {
  kind: "nbd",
  name: "direct",
  exports: ({ address, nbdPort }) => tcpExports(address, nbdPort ?? DEFAULT_NBD_PORT),
};
