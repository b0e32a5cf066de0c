/**
 * `api_only`: no NBD and no SSH to the host; each volume is read through
 * CloudStack's snapshot and extract (download_backup.ts), always a full of
 * the whole volume, with a warning.
 *
 * @module
 */
import type { AccessMode } from "./access_mode.ts";

export const apiOnlyMode: AccessMode = { name: "api_only", server: null };
