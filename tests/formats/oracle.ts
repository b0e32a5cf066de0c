/**
 * Test helpers: run an image writer into a real pipe (`sh -c 'cat > FILE'`)
 * and ask qemu-img (check, compare, info) about the result.
 *
 * @module
 */
import type { DiskSource } from "../../lib/core/source.ts";
import type { ImageWriteOptions, ImageWriter, ImageWriteReport } from "../../lib/formats/writer.ts";

/** Output of a command: success, and stdout + stderr text. */
export interface RunResult {
  ok: boolean;
  out: string;
}

/** Runs a command to completion. */
export async function run(cmd: string, args: string[]): Promise<RunResult> {
  const o = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { ok: o.success, out: dec.decode(o.stdout) + dec.decode(o.stderr) };
}

/** Writes `source` with `writer` through a pipe into `path` (a `cat` child process). */
export async function writeThroughPipe(
  writer: ImageWriter,
  source: DiskSource,
  path: string,
  options?: ImageWriteOptions,
): Promise<ImageWriteReport> {
  const cat = new Deno.Command("sh", {
    args: ["-c", 'exec cat > "$0"', path],
    stdin: "piped",
  }).spawn();
  let report: ImageWriteReport;
  try {
    report = await writer.write(source, cat.stdin, options);
  } catch (err) {
    await cat.status;
    throw err;
  }
  if (!(await cat.status).success) throw new Error(`cat > ${path} failed`);
  return report;
}

/** `qemu-img check` (formats with checks only). */
export function check(fmt: string, path: string): Promise<RunResult> {
  return run("qemu-img", ["check", "-f", fmt, path]);
}

/** A reference image the output is compared with. */
export interface Reference {
  readonly path: string;
  readonly format: "raw" | "qcow2";
}

/**
 * Saves `source` as the reference for {@link compare}: a sparse raw file, then
 * a qcow2 copy of it. qemu-img compare skips a qcow2's unallocated clusters
 * without reading them, whereas the holes of a raw file are read through the
 * page cache (seconds per GiB, minutes under load).
 */
export async function saveReference(
  source: { saveRaw(path: string): Promise<void> },
  dir: string,
): Promise<Reference> {
  const raw = `${dir}/src.raw`, path = `${dir}/src.qcow2`;
  await source.saveRaw(raw);
  const r = await run("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", raw, path]);
  if (!r.ok) throw new Error(`qemu-img convert ${raw}: ${r.out}`);
  return { path, format: "qcow2" };
}

/**
 * `qemu-img compare` of the reference against the image, whole or only the
 * window `[offset, offset+length)` (a raw filter with offset/size over each).
 */
export function compare(
  ref: Reference | string,
  fmt: string,
  path: string,
  window?: { offset: number; length: number },
): Promise<RunResult> {
  const r: Reference = typeof ref === "string" ? { path: ref, format: "raw" } : ref;
  if (!window) return run("qemu-img", ["compare", "-f", r.format, "-F", fmt, r.path, path]);
  const w = `driver=raw,offset=${window.offset},size=${window.length}`;
  const over = (format: string, file: string) =>
    format === "raw"
      ? `${w},file.driver=file,file.filename=${file}`
      : `${w},file.driver=${format},file.file.filename=${file}`;
  return run("qemu-img", ["compare", "--image-opts", over(r.format, r.path), over(fmt, path)]);
}

/** `qemu-img info --output=json`, or an error text. */
export async function info(
  fmt: string,
  path: string,
): Promise<{ ok: boolean; virtualSize?: number; json?: Record<string, unknown>; out: string }> {
  const r = await run("qemu-img", ["info", "--output=json", "-f", fmt, path]);
  if (!r.ok) return { ok: false, out: r.out };
  const json = JSON.parse(r.out.slice(0, r.out.lastIndexOf("}") + 1));
  return { ok: true, virtualSize: json["virtual-size"], json, out: r.out };
}
