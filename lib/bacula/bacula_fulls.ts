/**
 * What Bacula counts as the base of a Differential: its last Full job. A
 * dirtybit differential is based on the disk's last full stream, which may
 * come from a fallback full inside an Incremental job; Bacula would then
 * restore its last Full job with that differential, and the chain breaks.
 * So each Bacula Full job's streams are recorded in the state directory
 * (`bacula-fulls.json`), and a Differential job whose disks' last fulls are
 * not those of Bacula's base becomes a full.
 *
 * Bacula's `Since` of a Differential is the start time of the Full job it is
 * based on; that job's record is the first one written at or after it (a
 * Full job that Bacula later failed may have a record too, but a later one).
 *
 * @module
 */
import { readJsonFile, writeFileAtomic } from "../core/atomic_file.ts";

/** The streams one Bacula Full job wrote. */
export interface BaculaFull {
  jobId: number;
  /** Seconds since the epoch when the backend started the job (after Bacula's start time). */
  time: number;
  /** Backup id of each disk's full stream, by disk name. */
  disks: Record<string, string>;
}

/** Records kept: enough for any Differential whose Full is still in the catalog. */
const KEEP = 50;

const FILE = "bacula-fulls.json";

/** The Full job a Differential with this `Since` is based on, or null. */
export function baseFull(
  fulls: readonly BaculaFull[],
  since: number | undefined,
): BaculaFull | null {
  if (since === undefined) return null;
  return fulls.filter((f) => f.time >= since).sort((a, b) => a.time - b.time)[0] ?? null;
}

/**
 * Why a Differential of these disks must be a full (null: it may be a
 * differential): each disk's last full stream must be the one of `base`.
 */
export function differentialProblem(
  base: BaculaFull | null,
  disks: readonly { diskName: string; lastFullId: string | null }[],
): string | null {
  if (!base) return "no Bacula Full job of this state directory matches the Differential's base";
  for (const d of disks) {
    const want = base.disks[d.diskName];
    if (!want) return `${d.diskName} was not in Full job ${base.jobId}`;
    if (d.lastFullId !== want) {
      return `the last full of ${d.diskName} is not the one of Full job ${base.jobId} (a fallback full came since)`;
    }
  }
  return null;
}

/** The records of a state directory, oldest first. */
export async function loadBaculaFulls(stateDir: string): Promise<BaculaFull[]> {
  return (await readJsonFile<BaculaFull[]>(`${stateDir}/${FILE}`)) ?? [];
}

/** Adds the record of a Full job that just ended. */
export async function recordBaculaFull(stateDir: string, full: BaculaFull): Promise<void> {
  const fulls = [...await loadBaculaFulls(stateDir), full].slice(-KEEP);
  await writeFileAtomic(`${stateDir}/${FILE}`, JSON.stringify(fulls, null, 1));
}
