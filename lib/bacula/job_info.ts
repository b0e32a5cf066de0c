/**
 * The Job block the plugin sends after Hello (docs/ptcomm.md §3).
 *
 * @module
 */
import { InputError } from "../core/errors.ts";
import type { RequestedLevel } from "../core/level.ts";

/** Job type: backup, estimate (also listing and query), restore. */
export type JobType = "B" | "E" | "R";

/** Parsed Job block. Keys were matched case-insensitively. */
export interface JobInfo {
  name: string;
  jobId: number;
  type: JobType;
  /** Absent for listing and query sessions. */
  level?: "F" | "I" | "D";
  since?: number;
  /** Restore prefix; empty string means in place. */
  where?: string;
  regexWhere?: string;
  replace?: string;
  namespace?: string;
  /** The FD's working directory (Bacula 15; 13 sends none). */
  workingDir?: string;
}

/** Parses `key=value` lines of the Job block; unknown keys are ignored (newer Bacula adds some). */
export function parseJobInfo(lines: string[]): JobInfo {
  const kv = new Map<string, string>();
  for (const line of lines) {
    const eq = line.indexOf("=");
    if (eq <= 0) throw new InputError(`Job block line '${line}' is not key=value`);
    kv.set(line.slice(0, eq).toLowerCase(), line.slice(eq + 1));
  }
  const name = kv.get("name");
  const jobId = kv.get("jobid");
  const type = kv.get("type");
  if (name === undefined || jobId === undefined || type === undefined) {
    throw new InputError("Job block lacks Name, JobID or Type");
  }
  if (!/^\d+$/.test(jobId)) throw new InputError(`Job block JobID '${jobId}' is not a number`);
  if (type !== "B" && type !== "E" && type !== "R") {
    throw new InputError(`Job block Type '${type}' is not B, E or R`);
  }
  const level = kv.get("level");
  if (level !== undefined && level !== "F" && level !== "I" && level !== "D") {
    throw new InputError(`Job block Level '${level}' is not F, I or D`);
  }
  const since = kv.get("since");
  if (since !== undefined && !/^\d+$/.test(since)) {
    throw new InputError(`Job block Since '${since}' is not a number`);
  }
  return {
    name,
    jobId: Number(jobId),
    type,
    level,
    since: since === undefined ? undefined : Number(since),
    where: kv.get("where"),
    regexWhere: kv.get("regexwhere"),
    replace: kv.get("replace"),
    namespace: kv.get("namespace"),
    workingDir: kv.get("workingdir") || undefined,
  };
}

/** The engine level for a Job block level. */
export function engineLevel(level: JobInfo["level"]): RequestedLevel {
  switch (level) {
    case "F":
      return "full";
    case "I":
      return "incremental";
    case "D":
      return "differential";
    default:
      return "auto";
  }
}
