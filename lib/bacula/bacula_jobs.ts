/**
 * Keeping dirtybit's chains where Bacula's are. Bacula restores a Full job,
 * then its last Differential, then the Incrementals after it; it bases an
 * Incremental on the last job that ended OK and a Differential on the last
 * Full job. dirtybit's state may be elsewhere: a fallback full inside an
 * Incremental job, or a job whose streams dirtybit committed but which
 * Bacula then cancelled or failed. Building on such a stream would break the
 * restore Bacula picks.
 *
 * So every backup job the backend finishes is recorded in the state
 * directory (`bacula-jobs.json`) with each disk's stream, and an
 * Incremental or Differential job stays one only if the disks' last streams
 * (last fulls for a Differential) are those of the job Bacula bases it on;
 * else it becomes a full, which restarts the chain at restore.
 *
 * Bacula's `Since` is the start time of that base job (in seconds); the
 * backend's record of it is written just after (in milliseconds). A record
 * written after it is a job Bacula did not keep (cancelled or failed after
 * the backend finished); the chain then has to restart. So the base must be
 * the only record at or after `Since`; two jobs started in the same second
 * also make it ambiguous, and a full settles it.
 *
 * @module
 */
import { readJsonFile, writeFileAtomic } from "../core/atomic_file.ts";

/** The streams one Bacula backup job wrote. */
export interface BaculaJob {
  jobId: number;
  level: "F" | "I" | "D";
  /** Milliseconds since the epoch when the backend started the job (after Bacula's start time). */
  time: number;
  /** Backup id of each disk's stream, by disk name. */
  disks: Record<string, string>;
}

/** A disk's last streams in its state directory. */
export interface DiskChain {
  diskName: string;
  lastBackupId: string | null;
  lastFullId: string | null;
}

/** Records kept: enough for any base job still in the catalog. */
const KEEP = 200;

const FILE = "bacula-jobs.json";

/**
 * Why a job of `level` with this `Since` must be a full (null: it may stay an
 * incremental or differential). Its base is the only record at or after
 * `Since` (of a Full job for a Differential), and every disk's last stream
 * (last full for a Differential) must be the one it wrote there. A disk
 * without a chain is left to the engine, which makes it a full saying why.
 */
export function chainProblem(
  jobs: readonly BaculaJob[],
  level: "I" | "D",
  since: number | undefined,
  allDisks: readonly DiskChain[],
): string | null {
  const kind = level === "D" ? "Full job" : "job";
  const last = (d: DiskChain) => level === "D" ? d.lastFullId : d.lastBackupId;
  const disks = allDisks.filter((d) => last(d) !== null);
  if (disks.length === 0) return null;
  if (since === undefined) return "the Job block has no Since";
  const after = jobs.filter((j) => j.time >= since * 1000 && (level === "I" || j.level === "F"));
  if (after.length === 0) return `no ${kind} this backend finished is the one Bacula bases it on`;
  if (after.length > 1) {
    return `jobs ${after.map((j) => j.jobId).join(", ")} all ran since Bacula's base ${kind}: ` +
      "Bacula did not keep the later ones (cancelled or failed)";
  }
  const base = after[0];
  for (const d of disks) {
    const want = base.disks[d.diskName];
    if (!want) return `${d.diskName} was not in ${kind} ${base.jobId}`;
    if (last(d) !== want) {
      return level === "D"
        ? `the last full of ${d.diskName} is not the one of Full job ${base.jobId} (a fallback full came since)`
        : `the last backup of ${d.diskName} is not the one of job ${base.jobId}`;
    }
  }
  return null;
}

/** The records of a state directory, oldest first. */
export async function loadBaculaJobs(stateDir: string): Promise<BaculaJob[]> {
  return (await readJsonFile<BaculaJob[]>(`${stateDir}/${FILE}`)) ?? [];
}

/** Adds the record of a backup job the backend just finished. */
export async function recordBaculaJob(stateDir: string, job: BaculaJob): Promise<void> {
  const jobs = [...await loadBaculaJobs(stateDir), job].slice(-KEEP);
  await writeFileAtomic(`${stateDir}/${FILE}`, JSON.stringify(jobs, null, 1));
}
