/**
 * `direct`: libvirt's NBD server of a running domain's pull backup on the
 * host's address, TCP port `nbd_port`, read directly (no encryption, no
 * authentication: a segregated backup network only); it ends with the job.
 *
 * @module
 */
import type { AccessMode } from "./access_mode.ts";

export const directMode: AccessMode = { name: "direct", server: "tcp" };
