/**
 * Restore sessions (spec/ptcomm.md §9, §17.4): the FD hands the chain's
 * files in job order; each file's data is one dirtybit stream, applied to
 * the disk's local target beside the where prefix, where the target's
 * sidecar enforces the chain order. A failed file is answered with `E`,
 * which fails the job ("Restore Error") but lets the other disks restore.
 *
 * @module
 */
import { dirname } from "node:path";
import { describeError, InputError } from "../core/errors.ts";
import { protocolError } from "./channel.ts";
import type { JobContext } from "./backup.ts";
import { parseRestoreName, restoreTargetPath } from "./names.ts";
import type { EngineRestoreTarget } from "./engine_port.ts";

/** A file that was accepted and whose DATA may follow. */
interface Accepted {
  fname: string;
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
    await ch.say(
      "I",
      `restored ${result.level} ${result.backupId} into ${file.target} (${result.bytes} bytes of data)`,
    );
    return true;
  } catch (e) {
    if (ch.signal.aborted) throw e;
    await ch.say("E", `${file.fname}: ${describeError(e)}`);
    return false;
  }
}

/** The restore loop up to FINISH. */
export async function runRestore(ctx: JobContext): Promise<void> {
  const { ch, job, params } = ctx;
  const format = params.format ?? "raw";
  const targets = new Map<string, EngineRestoreTarget>();
  await ctx.started();
  let current: Accepted | null = null;
  let failures = 0;
  try {
    for (;;) {
      const cmd = await ch.command("FNAME, DATA or FINISH");
      if (cmd === "FINISH") break;
      if (cmd.startsWith("FNAME:")) {
        current = null;
        const fname = cmd.slice("FNAME:".length);
        const attrs = await readAttributes(ctx);
        const type = attrs.get("STAT")!.trim()[0];
        if (type === "D") {
          await ch.send("OK");
          continue;
        }
        const name = parseRestoreName(fname);
        if (!name) {
          await ch.say(
            "W",
            `${fname}: not a dirtybit stream of the ${"@cloudstack"} namespace, skipped`,
          );
          await ch.send("SKIP");
          continue;
        }
        if (name.prefix === "" && !job.regexWhere) {
          failures++;
          await ch.say(
            "E",
            `${fname}: restoring onto the VM's own disk is not available yet: restore with where=DIR (writes DIR/@cloudstack/${name.vm}/${name.disk}.${format})`,
          );
          continue;
        }
        const target = restoreTargetPath(name, format);
        let session = targets.get(target);
        if (!session) {
          await Deno.mkdir(dirname(target), { recursive: true });
          session = await ch.guard(ctx.engine.openRestore({ path: target, format }));
          targets.set(target, session);
        }
        ch.log(`restore ${fname} -> ${target}`);
        await ch.send("OK");
        current = { fname, target, session };
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
  } finally {
    for (const s of targets.values()) await s.close().catch(() => {});
  }
  ch.log(`restore finished: ${failures} file(s) failed`);
  await ch.eod();
}
