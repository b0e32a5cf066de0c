/**
 * Pushing disk images to a destination all-or-nothing: every image is
 * streamed to `NAME.partial`, and only when all of them (and their companion
 * files) are complete are they renamed into place. On any failure the
 * partial files are removed and the error is rethrown, so the caller never
 * gets to write the VM configuration (which it writes last). Volumes created
 * beforehand are written in place; freeing them is the caller's part.
 *
 * @module
 */
import { TargetError } from "../core/errors.ts";
import type { DiskSource } from "../core/source.ts";
import type { ImageWriteOptions, ImageWriter, ImageWriteReport } from "../formats/writer.ts";
import type { Destination, PendingFile } from "./destination.ts";

/** One image to write. */
export interface ImageJob {
  /** Final path on the destination. */
  path: string;
  writer: ImageWriter;
  options?: ImageWriteOptions;
  source: DiskSource;
  /** `path` is a volume created beforehand: written in place, no `.partial` ({@link Destination.overwrite}). */
  inPlace?: boolean;
}

/** One image written. */
export interface PushedImage {
  path: string;
  report: ImageWriteReport;
  /** Companion files stored beside it (e.g. the VMDK descriptor). */
  companions: string[];
}

/** Writes every job (see the module doc); `progress` gets one line per finished image. */
export async function pushImages(
  dest: Destination,
  jobs: ImageJob[],
  progress: (line: string) => void = () => {},
): Promise<PushedImage[]> {
  const pending: PendingFile[] = [];
  const written: string[] = [];
  const pushed: PushedImage[] = [];
  try {
    for (const job of jobs) {
      const file = await (job.inPlace ? dest.overwrite(job.path) : dest.create(job.path));
      pending.push(file);
      const report = await job.writer.write(job.source, file.writable, job.options);
      pushed.push({ path: job.path, report, companions: [] });
      progress(
        `wrote ${job.path} (${report.format} ${report.subformat}, ${report.bytesWritten} bytes)`,
      );
    }
    for (const p of pushed) {
      for (const c of p.report.companions) {
        const path = dirPart(p.path) + c.name;
        written.push(path);
        await dest.writeFile(path, c.bytes);
        p.companions.push(path);
      }
    }
    for (const file of pending) {
      await file.commit();
      written.push(file.path);
    }
  } catch (err) {
    await Promise.all(pending.map((f) => f.discard()));
    await dest.remove(written);
    throw err;
  }
  return pushed;
}

/**
 * Refuses to overwrite: throws a TargetError naming the first of `names`
 * that already exists in `dir` and the parameter to change (`param`, e.g. `name`).
 */
export async function refuseExisting(
  dest: Destination,
  dir: string,
  names: string[],
  param: string,
): Promise<void> {
  const existing = new Set(await dest.list(dir));
  const clash = names.find((n) => existing.has(n));
  if (clash) {
    throw new TargetError((p) =>
      `${dest.join(dir, clash)} already exists: remove it or give another ${p(param)}`
    );
  }
}

/** The directory part of a path with its trailing separator (`/` or `\\`). */
function dirPart(path: string): string {
  return path.slice(0, Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\")) + 1);
}
