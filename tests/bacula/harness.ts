/**
 * Test harness: real Debian Bacula daemons (director with an SQLite catalog,
 * storage daemon with file volumes, file daemon with the stock bpipe plugin)
 * on loopback, with configs generated in a temporary directory. Jobs run
 * through bconsole; a job is good only if its catalog status is `T` AND its
 * JobErrors is 0 (spec/bpipe.md: a failing bpipe reader only gives an error).
 *
 * @module
 */
import { delay } from "../../lib/core/async.ts";

const SBIN = "/usr/sbin";
const TABLES_SCRIPT = "/usr/share/bacula-director/make_sqlite3_tables";

/** A FileSet with one bpipe plugin line; a backup Job of the same name is generated. */
export interface BpipeFileSet {
  name: string;
  /** PATH in the catalog, e.g. `/dirtybit/disk0.dbit`. */
  path: string;
  /** Shell command whose stdout is the data. */
  reader: string;
  /** Shell command fed the data at restore. */
  writer: string;
}

/** Catalog view of a finished job. */
export interface JobResult {
  jobId: number;
  status: string;
  errors: number;
  bytes: number;
  log: string;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

function quoteForDirector(text: string): string {
  return text.replaceAll("\\", "\\\\").replaceAll('"', '\\"');
}

async function run(cmd: string, args: string[], stdin?: string): Promise<string> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  })
    .spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")} failed: ${text.slice(-500)}`);
  return text;
}

/** Three Bacula daemons with private configs. */
export class BaculaLab {
  readonly dir: string;
  readonly #procs: Deno.ChildProcess[] = [];

  private constructor(dir: string) {
    this.dir = dir;
  }

  /** True when the Debian Bacula packages are installed. */
  static available(): boolean {
    try {
      for (const b of ["bacula-dir", "bacula-sd", "bacula-fd", "bconsole"]) {
        Deno.statSync(`${SBIN}/${b}`);
      }
      Deno.statSync(TABLES_SCRIPT);
      return true;
    } catch {
      return false;
    }
  }

  /** Writes configs, creates the catalog and starts the daemons. */
  static async start(filesets: BpipeFileSet[]): Promise<BaculaLab> {
    // Never skipped: `make setup` installs Bacula, so a missing one is a set-up failure.
    if (!BaculaLab.available()) {
      throw new Error(
        `Debian's Bacula packages are not installed (${SBIN}/bacula-dir, bacula-sd, bacula-fd, bconsole, ${TABLES_SCRIPT}): run make setup`,
      );
    }
    const dir = await Deno.makeTempDir({ prefix: "dirtybit-bacula-" });
    const lab = new BaculaLab(dir);
    try {
      await lab.#configure(filesets);
      await lab.#startDaemons();
      return lab;
    } catch (e) {
      await lab.stop();
      throw e;
    }
  }

  async #configure(filesets: BpipeFileSet[]): Promise<void> {
    const d = this.dir;
    for (const sub of ["dir", "sd", "fd", "vol"]) await Deno.mkdir(`${d}/${sub}`);
    const [dirPort, sdPort, fdPort] = [freePort(), freePort(), freePort()];
    const jobs = filesets.map((f) => `
FileSet {
  Name = "${f.name}"
  Include {
    Options { signature = MD5 }
    Plugin = "${quoteForDirector(`bpipe:${f.path}:${f.reader}:${f.writer}`)}"
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
}`).join("\n");
    const configs: Record<string, string> = {
      "bacula-dir.conf": `
Director {
  Name = lab-dir
  DIRport = ${dirPort}
  DirAddress = 127.0.0.1
  QueryFile = "/etc/bacula/scripts/query.sql"
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
  FileSet = "${filesets[0].name}"
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
  Plugin Directory = /usr/lib/bacula
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
    const script = (await Deno.readTextFile(TABLES_SCRIPT))
      .replace("cd /var/lib/bacula", `cd "${d}/dir"`)
      .replace("XXX_DBNAME_XXX", "bacula");
    await run("sh", ["-s"], script);
  }

  async #startDaemons(): Promise<void> {
    const d = this.dir;
    for (const [bin, conf] of [["bacula-sd", "sd"], ["bacula-fd", "fd"], ["bacula-dir", "dir"]]) {
      await run(`${SBIN}/${bin}`, ["-t", "-c", `${d}/bacula-${conf}.conf`]);
      this.#procs.push(
        new Deno.Command(`${SBIN}/${bin}`, {
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
    return run(`${SBIN}/bconsole`, ["-c", `${this.dir}/bconsole.conf`], `${commands}\nquit\n`);
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

  async #runAndWait(command: string): Promise<JobResult> {
    const out = await this.console(`${command}\nwait\n`);
    const m = /JobId=(\d+)/.exec(out);
    if (!m) throw new Error(`bconsole did not queue a job: ${out.slice(-800)}`);
    return await this.job(Number(m[1]));
  }

  /** Runs a backup job at `level` and waits for it. */
  backup(name: string, level: "Full" | "Incremental" | "Differential"): Promise<JobResult> {
    return this.#runAndWait(`run job=${name} level=${level} yes`);
  }

  /** Restores everything of one backup job (through the bpipe writer) and waits. */
  restore(jobId: number): Promise<JobResult> {
    return this.#runAndWait(`restore jobid=${jobId} client=lab-fd where=/ all done yes`);
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
