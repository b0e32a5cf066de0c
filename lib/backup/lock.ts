/**
 * One job at a time per state directory: a lock file holding the owner's pid.
 * A lock left by a process that no longer exists is taken over, which is what
 * makes it safe to clean up that process's leftovers in QEMU afterwards.
 *
 * @module
 */
import { join } from "node:path";
import { UsageError } from "../core/errors.ts";

/** A held lock; `release` removes it. */
export interface JobLock {
  /** True when the previous holder died without releasing the lock. */
  readonly tookOverStale: boolean;
  release(): Promise<void>;
}

/** Takes the lock of `stateDir`, or throws a UsageError naming the running job's pid. */
export async function lockStateDir(stateDir: string): Promise<JobLock> {
  const path = join(stateDir, ".lock");
  let tookOverStale = false;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const file = await Deno.open(path, { write: true, createNew: true, mode: 0o600 });
      await file.write(new TextEncoder().encode(`${Deno.pid}\n`));
      file.close();
      return { tookOverStale, release: () => Deno.remove(path).catch(() => {}) };
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      const pid = Number((await Deno.readTextFile(path).catch(() => "")).trim());
      if (pid > 0 && await processExists(pid)) {
        throw new UsageError(
          `another dirtybit job (pid ${pid}) is using state directory ${stateDir}: wait for it to end`,
        );
      }
      await Deno.remove(path).catch(() => {});
      tookOverStale = true;
    }
  }
  throw new UsageError(`cannot take the lock ${path}: remove it if no dirtybit job is running`);
}

async function processExists(pid: number): Promise<boolean> {
  return await Deno.stat(`/proc/${pid}`).then(() => true, () => false);
}
