/**
 * The backup level, declared once for every layer and both front ends: what a
 * backup is (stream header, checkpoint, state, report) and what a job asks for.
 * No imports: the Bacula plugin's build reads the parameter table, which
 * lists these.
 *
 * @module
 */

/** What a backup is. */
export type BackupLevel = "full" | "incremental" | "differential";

/** Every backup level, in chain order. */
export const BACKUP_LEVELS: readonly BackupLevel[] = ["full", "incremental", "differential"];

/** What a job asks for: `auto` is an incremental where the chain allows one, else a full. */
export type RequestedLevel = BackupLevel | "auto";

/** Every level a job may ask for. */
export const REQUESTED_LEVELS: readonly RequestedLevel[] = [...BACKUP_LEVELS, "auto"];
