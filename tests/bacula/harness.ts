/**
 * Test harness: real Bacula daemons (director with an SQLite catalog, storage
 * daemon with file volumes, file daemon with its plugins) on loopback, with
 * configs generated in a temporary directory: Debian's 9.6 packages (stock
 * bpipe plugin) or the Bacula 15 built into .tools/bacula15 (`make bacula15`).
 * Jobs run through bconsole; a job is good only if its catalog status is `T`
 * AND its JobErrors is 0 (a failing bpipe reader, or a backend's error
 * message, only gives an error).
 *
 * @module
 */
import { delay } from "../../lib/core/async.ts";
import { freePort, output } from "../helpers.ts";

/** Where one Bacula's programs and scripts are. */
export interface BaculaInstall {
  /** Directory of bacula-dir, bacula-sd and bconsole. */
  sbin: string;
  /** The bacula-fd to start; its directory is where the FD looks for metaplugin backends. */
  fd: string;
  /** The catalog's make_sqlite3_tables script. */
  tablesScript: string;
  queryFile: string;
  pluginDir: string;
}

/** Debian 12's packages. */
export const DEBIAN_BACULA: BaculaInstall = {
  sbin: "/usr/sbin",
  fd: "/usr/sbin/bacula-fd",
  tablesScript: "/usr/share/bacula-director/make_sqlite3_tables",
  queryFile: "/etc/bacula/scripts/query.sql",
  pluginDir: "/usr/lib/bacula",
};

/** A FileSet with one plugin line; a backup Job of the same name is generated. */
export interface LabJob {
  name: string;
  /** The Plugin line, e.g. `cloudstack: vm=...`. */
  plugin?: string;
  /** A plain file to back up instead. */
  file?: string;
  /** Extra Job resource lines, e.g. `Maximum Bandwidth Per Job = 2 mb/s`. */
  jobLines?: string[];
}

/** A FileSet with one bpipe plugin line. */
export interface BpipeFileSet {
  name: string;
  /** PATH in the catalog, e.g. `/dirtybit/disk0.dbit`. */
  path: string;
  /** Shell command whose stdout is the data. */
  reader: string;
  /** Shell command fed the data at restore. */
  writer: string;
}

/** The lab job of a bpipe FileSet. */
export function bpipeJob(f: BpipeFileSet): LabJob {
  return { name: f.name, plugin: `bpipe:${f.path}:${f.reader}:${f.writer}` };
}

/** Catalog view of a finished job. */
export interface JobResult {
  jobId: number;
  status: string;
  errors: number;
  bytes: number;
  log: string;
}

function quoteForDirector(text: string): string {
  return text.replaceAll("\\", "\\\\").replaceAll('"', '\\"');
}

/** Runs a Bacula tool; returns stdout and stderr together, as bconsole's answers use both. */
export async function run(cmd: string, args: string[], stdin?: string): Promise<string> {
  const out = await output(cmd, args, { stdin });
  const text = out.stdout + out.stderr;
  if (out.code !== 0) throw new Error(`${cmd} ${args.join(" ")} failed: ${text.slice(-500)}`);
  return text;
}

/** Three Bacula daemons with private configs. */
export class BaculaLab {
  readonly dir: string;
  readonly install: BaculaInstall;
  readonly #procs: Deno.ChildProcess[] = [];

  private constructor(dir: string, install: BaculaInstall) {
    this.dir = dir;
    this.install = install;
  }

  /** The files of `install` that are missing (none: it can run). */
  static missing(install: BaculaInstall): string[] {
    const files = [
      ...["bacula-dir", "bacula-sd", "bconsole"].map((b) => `${install.sbin}/${b}`),
      install.fd,
      install.tablesScript,
      install.queryFile,
    ];
    return files.filter((f) => {
      try {
        Deno.statSync(f);
        return false;
      } catch {
        return true;
      }
    });
  }

  /** Writes configs into `dir` (a new temporary one by default), creates the catalog, starts the daemons. */
  static async start(
    install: BaculaInstall,
    jobs: LabJob[],
    dir?: string,
  ): Promise<BaculaLab> {
    // Never skipped here: `make setup` installs Bacula, so a missing one is a set-up failure.
    const missing = BaculaLab.missing(install);
    if (missing.length > 0) {
      throw new Error(`Bacula is not installed (${missing.join(", ")}): run make setup`);
    }
    const lab = new BaculaLab(
      dir ?? await Deno.makeTempDir({ prefix: "dirtybit-bacula-" }),
      install,
    );
    try {
      await lab.#configure(jobs);
      await lab.#startDaemons();
      return lab;
    } catch (e) {
      await lab.stop();
      throw e;
    }
  }

  async #configure(labJobs: LabJob[]): Promise<void> {
    const d = this.dir;
    for (const sub of ["dir", "sd", "fd", "vol"]) {
      await Deno.mkdir(`${d}/${sub}`, { recursive: true });
    }
    const [dirPort, sdPort, fdPort] = [freePort(), freePort(), freePort()];
    const jobs = labJobs.map((f) => `
FileSet {
  Name = "${f.name}"
  Include {
    Options { signature = MD5 }
    ${
      f.plugin
        ? `Plugin = "${quoteForDirector(f.plugin)}"`
        : `File = "${quoteForDirector(f.file!)}"`
    }
  }
}
Job {
  Name = "${f.name}"
  Type = Backup
  Level = Full
  Client = lab-fd
  FileSet = "${f.name}"
  Storage = File1
  Pool = Default
  Messages = Std
  Write Bootstrap = "${d}/dir/%n.bsr"
  ${(f.jobLines ?? []).join("\n  ")}
}`).join("\n");
    const configs: Record<string, string> = {
      "bacula-dir.conf": `
Director {
  Name = lab-dir
  DIRport = ${dirPort}
  DirAddress = 127.0.0.1
  QueryFile = "${this.install.queryFile}"
  WorkingDirectory = "${d}/dir"
  PidDirectory = "${d}/dir"
  Maximum Concurrent Jobs = 1
  Password = "lab-dir-pw"
  Messages = Std
}
${jobs}
Job {
  Name = "RestoreFiles"
  Type = Restore
  Client = lab-fd
  FileSet = "${labJobs[0].name}"
  Storage = File1
  Pool = Default
  Messages = Std
  Where = /
}
Client {
  Name = lab-fd
  Address = 127.0.0.1
  FDPort = ${fdPort}
  Catalog = MyCatalog
  Password = "lab-fd-pw"
  AutoPrune = no
}
Storage {
  Name = File1
  Address = 127.0.0.1
  SDPort = ${sdPort}
  Password = "lab-sd-pw"
  Device = FileDev
  Media Type = File
}
Catalog {
  Name = MyCatalog
  dbname = "bacula"; dbuser = ""; dbpassword = ""
}
Messages {
  Name = Std
  console = all, !skipped, !saved
  catalog = all, !skipped, !saved
  append = "${d}/dir/bacula.log" = all, !skipped
}
Pool {
  Name = Default
  Pool Type = Backup
  Recycle = yes
  AutoPrune = no
  Volume Retention = 365 days
  Label Format = "Vol-"
}
Pool {
  Name = Scratch
  Pool Type = Backup
}
`,
      "bacula-sd.conf": `
Storage {
  Name = lab-sd
  SDPort = ${sdPort}
  SDAddress = 127.0.0.1
  WorkingDirectory = "${d}/sd"
  Pid Directory = "${d}/sd"
  Maximum Concurrent Jobs = 5
}
Director {
  Name = lab-dir
  Password = "lab-sd-pw"
}
Device {
  Name = FileDev
  Media Type = File
  Archive Device = ${d}/vol
  LabelMedia = yes
  Random Access = yes
  AutomaticMount = yes
  RemovableMedia = no
  AlwaysOpen = no
}
Messages {
  Name = Standard
  director = lab-dir = all
}
`,
      "bacula-fd.conf": `
FileDaemon {
  Name = lab-fd
  FDport = ${fdPort}
  FDAddress = 127.0.0.1
  WorkingDirectory = "${d}/fd"
  Pid Directory = "${d}/fd"
  Plugin Directory = ${this.install.pluginDir}
  Maximum Concurrent Jobs = 5
}
Director {
  Name = lab-dir
  Password = "lab-fd-pw"
}
Messages {
  Name = Standard
  director = lab-dir = all, !skipped, !restored
}
`,
      "bconsole.conf": `
Director {
  Name = lab-dir
  DIRport = ${dirPort}
  address = 127.0.0.1
  Password = "lab-dir-pw"
}
`,
    };
    for (const [name, text] of Object.entries(configs)) {
      await Deno.writeTextFile(`${d}/${name}`, text);
    }
    const script = (await Deno.readTextFile(this.install.tablesScript))
      .replace(/^cd .*$/m, `cd "${d}/dir"`)
      .replace("XXX_DBNAME_XXX", "bacula");
    await run("sh", ["-s"], script);
  }

  async #startDaemons(): Promise<void> {
    const d = this.dir;
    const { sbin, fd } = this.install;
    for (
      const [bin, conf] of [[`${sbin}/bacula-sd`, "sd"], [fd, "fd"], [`${sbin}/bacula-dir`, "dir"]]
    ) {
      await run(bin, ["-t", "-c", `${d}/bacula-${conf}.conf`]);
      this.#procs.push(
        new Deno.Command(bin, {
          args: ["-f", "-c", `${d}/bacula-${conf}.conf`],
          stdin: "null",
          stdout: "null",
          stderr: "null",
        }).spawn(),
      );
    }
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        const out = await this.console("status dir");
        if (out.includes("lab-dir")) return;
      } catch {
        // not up yet
      }
      if (Date.now() > deadline) throw new Error("Bacula director did not come up within 20 s");
      await delay(300);
    }
  }

  /** Runs bconsole commands and returns its output. */
  console(commands: string): Promise<string> {
    return run(
      `${this.install.sbin}/bconsole`,
      ["-c", `${this.dir}/bconsole.conf`],
      `${commands}\nquit\n`,
    );
  }

  /** Catalog row of a job plus the daemon log lines of that job. */
  async job(jobId: number): Promise<JobResult> {
    const row = (await run("sqlite3", [
      `${this.dir}/dir/bacula.db`,
      `select JobStatus, JobErrors, JobBytes from Job where JobId=${jobId}`,
    ])).trim();
    const [status, errors, bytes] = row.split("|");
    const log = (await Deno.readTextFile(`${this.dir}/dir/bacula.log`).catch(() => ""))
      .split("\n").filter((l) => l.includes(`JobId ${jobId}:`)).join("\n");
    return { jobId, status, errors: Number(errors), bytes: Number(bytes), log };
  }

  /** Queues a job with `command` (and answers to its prompts) without waiting; returns its JobId. */
  async queue(command: string, answers: string[] = []): Promise<number> {
    const out = await this.console([command, ...answers].join("\n"));
    const m = /JobId=(\d+)/.exec(out);
    if (!m) throw new Error(`bconsole did not queue a job: ${out.slice(-1500)}`);
    return Number(m[1]);
  }

  /** Waits for a job to end and returns its catalog view. */
  async wait(jobId: number): Promise<JobResult> {
    await this.console(`wait jobid=${jobId}`);
    return await this.job(jobId);
  }

  /** Queues a job with `command` (and answers to its prompts) and waits for it. */
  async runAndWait(command: string, answers: string[] = []): Promise<JobResult> {
    return await this.wait(await this.queue(command, answers));
  }

  /** Runs a backup job at `level` and waits for it. */
  backup(name: string, level: "Full" | "Incremental" | "Differential"): Promise<JobResult> {
    return this.runAndWait(`run job=${name} level=${level} yes`);
  }

  /** Restores everything of one backup job (through the bpipe writer) and waits. */
  restore(jobId: number): Promise<JobResult> {
    return this.runAndWait(`restore jobid=${jobId} client=lab-fd where=/ all done yes`);
  }

  /** Stops the daemons and removes the directory. */
  async stop(): Promise<void> {
    for (const p of this.#procs.reverse()) {
      try {
        p.kill("SIGTERM");
      } catch {
        // already gone
      }
      const timer = setTimeout(() => {
        try {
          p.kill("SIGKILL");
        } catch {
          // already gone
        }
      }, 5000);
      await p.status;
      clearTimeout(timer);
    }
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** A job counts as good only with status T and no errors. */
export function isGood(job: JobResult): boolean {
  return job.status === "T" && job.errors === 0;
}
