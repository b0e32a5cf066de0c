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

/**
 * `qemu-img compare` of the raw reference against the image, whole or only the
 * window `[offset, offset+length)` (a raw filter with offset/size over each).
 */
export function compare(
  raw: string,
  fmt: string,
  path: string,
  window?: { offset: number; length: number },
): Promise<RunResult> {
  if (!window) return run("qemu-img", ["compare", "-f", "raw", "-F", fmt, raw, path]);
  const w = `driver=raw,offset=${window.offset},size=${window.length}`;
  return run("qemu-img", [
    "compare",
    "--image-opts",
    `${w},file.driver=file,file.filename=${raw}`,
    `${w},file.driver=${fmt},file.file.filename=${path}`,
  ]);
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
