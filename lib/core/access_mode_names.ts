/**
 * The names of the NBD access modes (`nbd_access_mode`), declared once for
 * the parameter table and the modes' registry (lib/backup/access_modes.ts,
 * which a test holds to this list). No imports: the Bacula plugin's build
 * reads the parameter table, which lists these, and must not load the backup
 * engine.
 *
 * @module
 */

/** Every access mode's name, the default first. */
export const ACCESS_MODE_NAMES = ["ssh_tunnel", "direct", "api_only"] as const;

/** The name of an access mode. */
export type AccessModeName = typeof ACCESS_MODE_NAMES[number];
