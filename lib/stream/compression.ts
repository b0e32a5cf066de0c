/**
 * The stream compression setting: its one parsed type, its default, the
 * levels one may ask for and the one wording of what is wrong, shared by every
 * front end (CLI flag, Bacula parameter, daemon config) and by replication.
 * No imports: the Bacula plugin's build reads the parameter table, which
 * names this default, with no permissions beyond writing its header.
 *
 * @module
 */

/** Stream compression: `none` or `zstd:N`. */
export type Compression = "none" | `zstd:${number}`;

/** The zstd level of a plain `zstd` and of replication unless told otherwise. */
export const DEFAULT_ZSTD_LEVEL = 3;

/** What a backup compresses with unless told otherwise. */
export const DEFAULT_COMPRESSION: Compression = `zstd:${DEFAULT_ZSTD_LEVEL}`;

/** The highest level one may ask for: zstd's 20 to 22 need far more memory for little gain. */
export const MAX_ZSTD_LEVEL = 19;

/** What a compression setting must look like, in the same words wherever it is refused. */
export const COMPRESSION_RULE =
  `must be none, zstd or zstd:N with N from 1 to ${MAX_ZSTD_LEVEL} (zstd is zstd:${DEFAULT_ZSTD_LEVEL})`;

/**
 * Parses a requested compression: `none`, `zstd` (the default level) or
 * `zstd:N`; null when it is none of them (see {@link COMPRESSION_RULE}).
 */
export function parseCompression(text: string): Compression | null {
  if (text === "none") return "none";
  const m = /^zstd(?::(\d{1,2}))?$/.exec(text);
  if (!m) return null;
  const level = m[1] === undefined ? DEFAULT_ZSTD_LEVEL : Number(m[1]);
  return level >= 1 && level <= MAX_ZSTD_LEVEL ? `zstd:${level}` : null;
}

/** The zstd level of a parsed compression; 0 for none. */
export function zstdLevel(c: Compression): number {
  return c === "none" ? 0 : Number(c.slice("zstd:".length));
}
