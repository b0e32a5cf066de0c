/**
 * The stream compression setting and its default. No imports: the Bacula
 * plugin's build reads the parameter table, which names this default, with
 * no permissions beyond writing its header.
 *
 * @module
 */

/** Stream compression: `none` or `zstd:N` with N in 1..22. */
export type Compression = "none" | `zstd:${number}`;

/** What a backup compresses with unless told otherwise. */
export const DEFAULT_COMPRESSION: Compression = "zstd:3";
