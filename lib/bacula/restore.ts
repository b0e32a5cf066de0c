/**
 * Restore sessions (docs/ptcomm.md §5): the FD hands the chain's
 * files in job order; each file's data is one dirtybit stream, applied in
 * order to one of three destinations:
 * - with a where prefix: the disk's local raw/qcow2 file beside it, whose
 *   sidecar enforces the chain order;
 * - in place (`where=/`): back onto the VM's disk (qmp= and node=), only with
 *   `guest_stopped=true`; the chain is tracked in the VM's state directory;
 * - with `cross_restore=`: staged, then pushed to the target at FINISH;
 * - with `restore_as=streams` (and a where prefix): the stream file itself,
 *   under its own name, with its index beside it, for `dirtybit serve`.
 * A replication job's record (JSON) is written back as it is, under the
 * where prefix.
 * A failed file gets one job error (`Q`, which Bacula counts, where an `E`
 * would add a second "PTCOMM cannot get packet header" error) and is skipped
 * or, after its data, acknowledged; the other disks restore.
 *
 * @module
 */
import { dirname, resolve } from "node:path";
import { ChainError, describeError, InputError, UsageError } from "../core/errors.ts";
import { makeDirectory } from "../core/files.ts";
import { protocolError } from "./channel.ts";
import { type JobContext, stateDirOf } from "./backup.ts";
import {
  NAMESPACE,
  parseRestoreName,
  recordNameAt,
  type RestoreName,
  restoreTargetPath,
} from "./names.ts";
import { concatBytes } from "../core/bytes.ts";
import type { EngineRestoreTarget } from "./engine_port.ts";
import {
  type CrossRestorePlan,
  planCrossRestore,
  runCrossRestore,
  StagedStreams,
} from "./crossrestore.ts";
import { StreamFiles } from "./stream_files.ts";

/** A file that was accepted and whose DATA may follow. */
interface Accepted {
  fname: string;
  /** How the result is reported: `restored ... into X`, `staged ... for Y`, `written ... to Z`. */
  verb: "restored into" | "staged for" | "written to";
  target: string;
  session: EngineRestoreTarget;
}

/** Reads the attribute lines of a file announcement up to F. */
async function readAttributes(ctx: JobContext): Promise<Map<string, string>> {
  const attrs = new Map<string, string>();
  for (const line of await ctx.ch.block("file attribute")) {
    const colon = line.indexOf(":");
    if (colon <= 0) {
      throw new InputError(`protocol error: file attribute '${line.slice(0, 60)}' has no keyword`);
    }
    attrs.set(line.slice(0, colon), line.slice(colon + 1));
  }
  if (!attrs.has("STAT")) throw new InputError("protocol error: file announcement without STAT");
  return attrs;
}

/** Consumes D packets up to F (for streams the backend does not use). */
async function skipData(ctx: JobContext, what: string): Promise<void> {
  for (;;) {
    const p = await ctx.ch.next();
    if (p?.kind === "F") return;
    if (p?.kind !== "D") throw protocolError(`${what} data or F`, p);
  }
}

/** Feeds the D packets up to F into `apply`, then answers OK or E. */
async function restoreData(ctx: JobContext, file: Accepted): Promise<boolean> {
  const { ch } = ctx;
  const pipe = new TransformStream<Uint8Array, Uint8Array>();
  const writer = pipe.writable.getWriter();
  const applied = file.session.apply(pipe.readable);
  const settled = applied.then(() => "done" as const, () => "done" as const);
  let feeding = true;
  for (;;) {
    const p = await ch.next();
    if (p?.kind === "F") break;
    if (p?.kind !== "D") {
      await writer.abort(new InputError("restore data ended early")).catch(() => {});
      throw protocolError("restore data or F", p);
    }
    if (feeding) {
      const r = await ch.guard(
        Promise.race([writer.write(p.payload).then(() => "ok" as const), settled]),
      )
        .catch(() => "done" as const);
      if (r === "done") feeding = false;
    }
  }
  if (feeding) await writer.close().catch(() => {});
  try {
    const result = await ch.guard(applied);
    if (!feeding) {
      throw new InputError(`${file.fname}: data continues after the end of the dirtybit stream`);
    }
    await ch.send("OK");
    const [done, prep] = file.verb.split(" ");
    await ch.say(
      "I",
      `${done} ${result.level} ${result.backupId} ${prep} ${file.target} (${result.bytes} bytes of data)`,
    );
    for (const note of result.notes ?? []) await ch.say("W", note);
    return true;
  } catch (e) {
    if (ch.signal.aborted) throw e;
    await ch.say("Q", `${file.fname}: ${describeError(e)}`);
    await ch.send("OK");
    return false;
  }
}

/** Where the files of a restore job go, chosen per file. */
class Destinations {
  readonly #ctx: JobContext;
  readonly #files = new Map<string, EngineRestoreTarget>();
  readonly #streams = new StreamFiles(true);
  /** One VM disk at a time: each holds the VM's state directory lock. */
  #vmDisk: { disk: string; session: EngineRestoreTarget } | null = null;
  readonly cross: { plan: CrossRestorePlan; staged: StagedStreams } | null;

  constructor(ctx: JobContext, cross: Destinations["cross"]) {
    this.#ctx = ctx;
    this.cross = cross;
  }

  /** Accepts a file (answering OK, or SKIP after a warning or error); null when it was not accepted. */
  async accept(fname: string, name: RestoreName): Promise<Accepted | "failed" | null> {
    const { ch, job, params } = this.#ctx;
    if (this.cross) {
      const target = `cross_restore=${this.cross.plan.name}`;
      ch.log(`restore ${fname} -> staging ${this.cross.staged.dir}`);
      await ch.send("OK");
      return { fname, verb: "staged for", target, session: this.cross.staged.target() };
    }
    const inPlace = name.prefix === "" && !job.regexWhere;
    if (params.restore_as === "streams") {
      if (inPlace) {
        await ch.say("Q", `${fname}: restore_as=streams writes stream files: give where=DIR`);
        await ch.send("SKIP");
        return "failed";
      }
      const target = resolve(fname);
      await makeDirectory(dirname(target), "the restore directory");
      ch.log(`restore ${fname} -> stream file ${target}`);
      await ch.send("OK");
      return { fname, verb: "written to", target, session: this.#streams.target(target) };
    }
    if (inPlace) return await this.#acceptInPlace(fname, name);
    const format = params.format ?? "raw";
    // A relative `where` is the FD's working directory's; qemu-nbd gets it absolute.
    const target = resolve(restoreTargetPath(name, format));
    let session = this.#files.get(target);
    if (!session) {
      await makeDirectory(dirname(target), "the restore directory");
      session = await ch.guard(this.#ctx.engine.openRestore({ path: target, format }));
      this.#files.set(target, session);
    }
    ch.log(`restore ${fname} -> ${target}`);
    await ch.send("OK");
    return { fname, verb: "restored into", target, session };
  }

  async #acceptInPlace(fname: string, name: RestoreName): Promise<Accepted | "failed" | null> {
    const { ch, job, params, workDir } = this.#ctx;
    if (job.replace === "n") {
      await ch.say("W", `${fname}: Replace=never: the VM's disk ${name.disk} is not overwritten`);
      await ch.send("SKIP");
      return null;
    }
    const refuse = async (why: string) => {
      await ch.say("Q", `${fname}: ${why}`);
      await ch.send("SKIP");
      return "failed" as const;
    };
    if (!params.qmp) {
      return await refuse(
        `restoring onto the VM's own disk needs qmp=SOCKET of the QEMU that has disk ${name.disk}; or restore with where=DIR`,
      );
    }
    if (params.guest_stopped !== true) {
      return await refuse(
        `restoring onto the VM's disk ${name.disk} overwrites it: confirm that no guest writes it (VM stopped or disk detached) with guest_stopped=true, or restore with where=DIR`,
      );
    }
    if (params.node?.length && !params.node.includes(name.disk)) {
      return await refuse(`disk ${name.disk} is not among node=${params.node.join(",")}`);
    }
    if (this.#vmDisk?.disk !== name.disk) {
      await this.#closeVmDisk();
      try {
        const session = await ch.guard(this.#ctx.engine.openVmDiskRestore({
          qmp: params.qmp,
          node: name.disk,
          nbdSocket: params.nbd_socket,
          stateDir: stateDirOf(params, workDir),
        }));
        this.#vmDisk = { disk: name.disk, session };
      } catch (e) {
        if (ch.signal.aborted) throw e;
        return await refuse(describeError(e));
      }
    }
    ch.log(`restore ${fname} -> disk ${name.disk} of ${params.qmp}`);
    await ch.send("OK");
    return {
      fname,
      verb: "restored into",
      target: `disk ${name.disk} of the VM`,
      session: this.#vmDisk!.session,
    };
  }

  async #closeVmDisk(): Promise<void> {
    const open = this.#vmDisk;
    this.#vmDisk = null;
    if (open) await open.session.close();
  }

  /** Closes every target; a VM disk's export removal failing is reported. */
  async close(): Promise<void> {
    for (const s of this.#files.values()) await s.close().catch(() => {});
    await this.#closeVmDisk();
  }
}

/** The restore loop up to FINISH, then the cross-restore if one was asked for. */
export async function runRestore(ctx: JobContext): Promise<void> {
  const { ch, params } = ctx;
  const plan = params.cross_restore ? planCrossRestore(params) : null;
  const cross = plan
    ? {
      plan,
      staged: await StagedStreams.create(
        params.staging_dir ?? `${ctx.workDir}/dirtybit-staging`,
        ctx.job.jobId,
      ),
    }
    : null;
  const destinations = new Destinations(ctx, cross);
  try {
    await ctx.started();
    const failures = await restoreLoop(ctx, destinations);
    await destinations.close();
    ch.log(`restore finished: ${failures} file(s) failed`);
    if (cross) await finishCrossRestore(ctx, cross, failures);
  } finally {
    await destinations.close().catch(() => {});
    await cross?.staged.remove();
  }
  await ch.eod();
}

/** Runs the cross-restore of the staged chain; throws (job fails with A) unless it succeeded. */
async function finishCrossRestore(
  ctx: JobContext,
  cross: { plan: CrossRestorePlan; staged: StagedStreams },
  failures: number,
): Promise<void> {
  const { ch, params } = ctx;
  const target = cross.plan.name;
  if (failures > 0) {
    throw new ChainError(
      `cross_restore=${target} not run: ${failures} file(s) of the chain failed to restore`,
    );
  }
  if (cross.staged.files.length === 0) {
    throw new UsageError(`cross_restore=${target}: the job restored no dirtybit streams`);
  }
  await ch.say("I", `cross_restore=${target}: pushing ${cross.staged.files.length} stream(s)`);
  const result = await ch.guard(
    runCrossRestore(
      cross.plan,
      params,
      cross.staged.files,
      (k, t) => ch.say(k, t),
      (l) => ch.log(l),
    ),
  );
  const details = Object.entries(result.details).map(([k, v]) => `${k}=${v}`).join(" ");
  await ch.say(
    "I",
    `cross_restore=${target}: VM ${result.vmName} restored, definition ${result.config}` +
      `${result.registered ? ", registered" : ""}${details ? ` (${details})` : ""}`,
  );
}

/** Writes a record's data to its restored name. */
async function restoreRecord(ctx: JobContext, path: string): Promise<void> {
  const parts: Uint8Array[] = [];
  for (;;) {
    const p = await ctx.ch.next();
    if (p?.kind === "F") break;
    if (p?.kind !== "D") throw protocolError("record data or F", p);
    parts.push(p.payload.slice());
  }
  await Deno.mkdir(dirname(path), { recursive: true });
  await Deno.writeFile(path, concatBytes(...parts));
  await ctx.ch.send("OK");
  await ctx.ch.say("I", `restored the replication record ${path}`);
}

/** Serves FNAME/DATA/ACL/... up to FINISH; returns how many files failed. */
async function restoreLoop(ctx: JobContext, destinations: Destinations): Promise<number> {
  const { ch } = ctx;
  let current: Accepted | null = null;
  /** An accepted replication record whose DATA may follow. */
  let record: string | null = null;
  let failures = 0;
  for (;;) {
    const cmd = await ch.command("FNAME, DATA or FINISH");
    if (cmd === "FINISH") return failures;
    if (cmd.startsWith("FNAME:")) {
      current = null;
      record = null;
      const fname = cmd.slice("FNAME:".length);
      const attrs = await readAttributes(ctx);
      const type = attrs.get("STAT")!.trim()[0];
      if (type === "D") {
        await ch.send("OK");
        continue;
      }
      const name = parseRestoreName(fname);
      const recordAt = name ? -1 : recordNameAt(fname);
      if (recordAt === 0) {
        await ch.say(
          "W",
          `${fname}: a replication record is restored with where=DIR only, skipped`,
        );
        await ch.send("SKIP");
        continue;
      }
      if (recordAt > 0) {
        await ch.send("OK");
        record = fname;
        continue;
      }
      if (!name) {
        await ch.say("W", `${fname}: not a dirtybit stream of the ${NAMESPACE} namespace, skipped`);
        await ch.send("SKIP");
        continue;
      }
      const accepted = await destinations.accept(fname, name);
      if (accepted === "failed") failures++;
      else current = accepted;
    } else if (cmd === "DATA" && record) {
      await restoreRecord(ctx, record);
      record = null;
    } else if (cmd === "DATA") {
      if (!current) throw new InputError("protocol error: DATA without an accepted file");
      if (!(await restoreData(ctx, current))) failures++;
      current = null;
    } else if (cmd === "ACL" || cmd === "XATTR" || cmd.startsWith("RESTOREOBJ")) {
      if (cmd.startsWith("RESTOREOBJ:")) await ch.command("RESTOREOBJ_LEN");
      await skipData(ctx, cmd);
      await ch.send("OK");
    } else {
      throw protocolError("FNAME, DATA or FINISH", {
        kind: "C",
        payload: new TextEncoder().encode(cmd),
      });
    }
  }
}
