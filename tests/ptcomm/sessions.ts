/**
 * Whole PTCOMM sessions against `dirtybit backend` (through the same
 * SIGUSR1 wrapper the FD would start), shared by the protocol tests and the
 * benchmark.
 *
 * @module
 */
import { type BackedUpFile, FdEmulator } from "./emulator.ts";
import { packetText } from "../../lib/bacula/ptcomm.ts";
import { delay } from "../../lib/core/async.ts";

const WRAPPER = new URL("../../lib/bacula/cloudstack_backend.sh", import.meta.url).pathname;
const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** The backend command line as the FD would run it, from this source tree. */
export const BACKEND_COMMAND = [WRAPPER, Deno.execPath(), "run", "-A", MAIN, "backend"];

/** Start seconds of each directory's last good job and last good Full, as Bacula's catalog has. */
const jobStarts = new Map<string, { last: number; full: number }>();

/**
 * Times a backup job as Bacula does: started in a second of its own (Since
 * has one-second resolution), and for an Incremental (Differential) the Job
 * block's Since is the start of the directory's last good job (last Full).
 * Call `ended` once the job ended well.
 */
export async function baculaTiming(
  dir: string,
  level: "F" | "I" | "D",
): Promise<{ since: string[]; ended: () => void }> {
  await delay(1000 - (Date.now() % 1000));
  const start = Math.floor(Date.now() / 1000);
  const prev = jobStarts.get(dir);
  const since = level === "F" || !prev ? [] : [`Since=${level === "D" ? prev.full : prev.last}`];
  const ended = () =>
    jobStarts.set(dir, { last: start, full: level === "F" ? start : prev?.full ?? start });
  return { since, ended };
}

/** Plugin parameters for disk 0 of a qemu-storage-daemon fixture, logging into `dir`. */
export function qsdParams(
  qsd: { qmpSocket: string; nbdSocket: string; disks: { node: string }[] },
  vm: string,
  dir: string,
): string[] {
  return [
    `vm=${vm}`,
    `qmp=${qsd.qmpSocket}`,
    `nbd_socket=${qsd.nbdSocket}`,
    `node=${qsd.disks[0].node}`,
    `log_file=${dir}/backend.log`,
  ];
}

/** Runs one backup job (Job block, Params, BackupStart, files, END/T); throws unless it ended cleanly. */
export async function backupSession(
  cwd: string,
  jobId: number,
  level: "F" | "I" | "D",
  params: string[],
  keepData = true,
): Promise<{ files: BackedUpFile[]; messages: string[] }> {
  const timing = await baculaTiming(cwd, level);
  const fd = new FdEmulator(BACKEND_COMMAND, { cwd, timeoutMs: 120_000 });
  try {
    await fd.open(
      [
        `Name=CSBackup.${jobId}`,
        `JobID=${jobId}`,
        "Type=B",
        `Level=${level}`,
        ...timing.since,
        "Namespace=@cloudstack",
        `WorkingDir=${cwd}`,
      ],
      params,
    );
    await fd.command("BackupStart");
    await fd.expect("F");
    const files = await fd.readFiles(true, keepData);
    await fd.end();
    const { code, stderr } = await fd.exit();
    if (code !== 0 || stderr !== "") throw new Error(`backend exited ${code}, stderr '${stderr}'`);
    timing.ended();
    return { files, messages: fd.messages.map((m) => `${m.kind}: ${m.text}`) };
  } finally {
    await fd.dispose();
  }
}

/** Runs one estimate job; returns the listed files (names and STAT lines, no data). */
export async function estimateSession(
  cwd: string,
  level: "F" | "I" | "D",
  params: string[],
): Promise<BackedUpFile[]> {
  const fd = new FdEmulator(BACKEND_COMMAND, { cwd, timeoutMs: 120_000 });
  try {
    await fd.open(
      ["Name=-Console-.1", "JobID=0", "Type=E", `Level=${level}`, `WorkingDir=${cwd}`],
      params,
    );
    await fd.command("EstimateStart");
    await fd.expect("F");
    const files = await fd.readFiles(false);
    await fd.end();
    const { code, stderr } = await fd.exit();
    if (code !== 0 || stderr !== "") throw new Error(`backend exited ${code}, stderr '${stderr}'`);
    return files;
  } finally {
    await fd.dispose();
  }
}

/**
 * Runs one restore job handing the files in order; returns the answer per file
 * (`Q:<error>` for a file the backend failed) and the messages.
 */
export async function restoreSession(
  cwd: string,
  where: string,
  params: string[],
  files: BackedUpFile[],
): Promise<{ answers: string[]; messages: string[] }> {
  const fd = new FdEmulator(BACKEND_COMMAND, { cwd, timeoutMs: 120_000 });
  try {
    await fd.open(
      [
        "Name=CSRestore.1",
        "JobID=90",
        "Type=R",
        `Where=${where}`,
        "Replace=a",
        `WorkingDir=${cwd}`,
      ],
      params,
    );
    await fd.command("RestoreStart");
    await fd.expect("F");
    const answers: string[] = [];
    for (const f of files) {
      const a = await fd.restoreFile(`${where}${f.fname}`, f.data ?? new Uint8Array(0));
      // A file the backend failed shows as its job error (Q).
      answers.push(a.errors.length ? `Q:${a.errors.join(" | ")}` : a.result ?? a.accept);
    }
    await fd.command("FINISH");
    // F ends the restore; an A (a failed cross-restore) is recorded as the last answer.
    const finish = await fd.next("F after FINISH");
    if (finish?.kind === "F") {
      await fd.end();
    } else {
      answers.push(finish ? `${finish.kind}:${packetText(finish)}` : "EOF");
      await fd.closeInput();
    }
    await fd.exit();
    return { answers, messages: fd.messages.map((m) => `${m.kind}: ${m.text}`) };
  } finally {
    await fd.dispose();
  }
}
