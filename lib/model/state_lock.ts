/**
 * One job at a time per state directory: an exclusive advisory lock (flock)
 * on `.lock`, which also holds the owner's pid for messages. The kernel drops
 * the lock when its holder dies, however it dies, so a killed job's lock is
 * taken over by the next one — which is what makes it safe to clean up that
 * job's leftovers in QEMU afterwards. A pid file alone is not enough: two jobs
 * starting together could both find it empty or stale and both go on.
 *
 * The file is never removed: a job that opened it just before its removal
 * would lock a file that no one else sees.
 *
 * @module
 */
import { writeAll } from "../core/bytes.ts";
import { join } from "node:path";
import { BusyError, fileSystemError } from "../core/errors.ts";

/** A held lock; `release` gives it up. */
export interface JobLock {
  release(): Promise<void>;
}

/** Takes the lock of `stateDir`, or throws a BusyError naming the running job's pid. */
export async function lockStateDir(stateDir: string): Promise<JobLock> {
  const path = join(stateDir, ".lock");
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 });
  } catch (err) {
    throw fileSystemError(err, "cannot open the lock", path);
  }
  if (!(await file.tryLock(true))) {
    file.close();
    const pid = (await Deno.readTextFile(path).catch(() => "")).trim() || "unknown";
    throw new BusyError(
      `another dirtybit job (pid ${pid}) is using state directory ${stateDir}: wait for it to end`,
    );
  }
  try {
    await file.truncate(0);
    await writeAll(file, new TextEncoder().encode(`${Deno.pid}\n`));
  } catch (err) {
    file.close();
    throw fileSystemError(err, "cannot write the lock", path);
  }
  return {
    release: async () => {
      // Emptied, not removed (see above); closing drops the lock.
      await file.truncate(0).catch(() => {});
      file.close();
    },
  };
}
