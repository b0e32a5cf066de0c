/**
 * `dirtybit mount` and `umount`: a backup chain served over NBD, exposed as
 * a read-only file by nbdfuse, attached to a loop device with its partitions
 * and each readable file system mounted read-only under `DIR/<partition>`
 * (`DIR/disk` for a disk without a partition table).
 *
 * Everything is recorded in `DIR/.dirtybit-mount.json` BEFORE it is started or
 * created, with the owner's process stamp, so the next mount or umount of the
 * same DIR undoes what a killed mount left: only what the record names (mount
 * points it lists, loop devices attached to its FUSE file, its FUSE mount, the
 * private directory of the server's socket). The socket lives outside DIR, in
 * a short `dirtybit-mount-*` directory under $XDG_RUNTIME_DIR or /tmp, so a
 * DIR of any depth works.
 *
 * @module
 */
import { join, resolve } from "node:path";
import { tmpdir } from "node:os";
import { BusyError, SourceError, TargetError, UsageError } from "../core/errors.ts";
import { readJsonFile, writeFileAtomic } from "../core/atomic_file.ts";
import { delay } from "../core/async.ts";
import {
  helperCommand,
  type HelperProgram,
  processInfo,
  programMissing,
  selfStamp,
  stampAlive,
  startError,
} from "../core/process.ts";
import { type ServeOptions, startServe } from "../serve/mod.ts";
import {
  isSocketDir,
  leftovers,
  type MountState,
  parseLoops,
  parseMounts,
  parseProbe,
  partitionName,
  readOnlyOptions,
  SOCKET_NAME,
  socketDirFor,
  unmountable,
} from "./mount_plan.ts";

/** The record's name under DIR. */
export const STATE_FILE = ".dirtybit-mount.json";
const WORK_DIR = ".dirtybit-mount";
const READY_TIMEOUT_MS = 30_000;

/** One partition (or the whole disk) and what became of it. */
export interface MountedPart {
  /** `p1`, `p2`, ... or `disk`. */
  name: string;
  device: string;
  fstype?: string;
  /** Where it is mounted; undefined when skipped. */
  path?: string;
  /** Why it was not mounted. */
  skipped?: string;
}

/** A mounted chain; {@link MountedChain.close} undoes all of it. */
export interface MountedChain {
  dir: string;
  parts: MountedPart[];
  /** Pid of a killed mount whose leftovers were removed first. */
  cleanedAfter?: number;
  close(): Promise<void>;
}

/**
 * Mounts the disk at the last stream of `streams` read-only under `dir`;
 * `onLog` gets what the server reports (failed reads among them) while mounted.
 */
export async function mountChain(
  streams: string[],
  dirArg: string,
  onLog?: ServeOptions["onLog"],
): Promise<MountedChain> {
  const dir = resolve(dirArg);
  const info = await Deno.stat(dir).catch(() => undefined);
  if (!info?.isDirectory) {
    throw new UsageError(`mount: ${dir} is not a directory: create it first`);
  }
  const cleanedAfter = await cleanDeadMount(dir);
  const statePath = join(dir, STATE_FILE);
  const work = join(dir, WORK_DIR);
  const state: MountState = {
    tool: "dirtybit mount",
    owner: await selfStamp(),
    streams: streams.map((s) => resolve(s)),
    work,
    socketDir: await socketDir(),
    loops: [],
    mounts: [],
    dirs: [],
  };
  const save = () => writeFileAtomic(statePath, JSON.stringify(state, null, 2) + "\n");
  await save();
  let server: { close(): Promise<void> } | undefined;
  let nbdfuse: Deno.ChildProcess | undefined;
  const close = async () => {
    await undo(state);
    // nbdfuse exits once its mount is gone; a mount that could not be undone keeps it.
    if (nbdfuse) {
      const timer = setTimeout(() => nbdfuse!.kill("SIGKILL"), 5000);
      await nbdfuse.status;
      clearTimeout(timer);
    }
    await server?.close();
    await removeDirs(state);
    await Deno.remove(statePath).catch(() => {});
  };
  try {
    await Deno.remove(work, { recursive: true }).catch(() => {});
    await Deno.mkdir(join(work, "fuse"), { recursive: true, mode: 0o700 });
    // Not recursive: a name someone else made in /tmp fails here instead of being used.
    await Deno.mkdir(state.socketDir!, { mode: 0o700 });
    const socket = join(state.socketDir!, SOCKET_NAME);
    const served = await startServe(state.streams, { socket, onLog });
    server = served;
    state.fuse = join(work, "fuse");
    state.fuseFile = join(state.fuse, "disk");
    await save();
    nbdfuse = await startNbdfuse(state.fuseFile, served.uri, join(work, "nbdfuse.pid"));
    state.nbdfuse = { pid: nbdfuse.pid, start: (await processInfo(nbdfuse.pid))?.start ?? 0 };
    await save();
    const loop = (await tool("losetup", ["-P", "-r", "-f", "--show", state.fuseFile])).trim();
    state.loops.push(loop);
    await save();
    const parts: MountedPart[] = [];
    for (const { name, device } of await partitions(loop)) {
      parts.push(await mountPart(state, save, dir, name, device));
    }
    return { dir, parts, cleanedAfter, close };
  } catch (err) {
    await close().catch(() => {});
    throw err;
  }
}

/**
 * Undoes the mount of `dir`: asks its mount process to stop (it unmounts
 * everything itself) or, when that process is gone, removes what it left.
 */
export async function unmountDir(dirArg: string, timeoutMs = 60_000): Promise<void> {
  const dir = resolve(dirArg);
  const statePath = join(dir, STATE_FILE);
  const state = await readState(statePath);
  if (!state) {
    throw new UsageError(
      `umount: ${dir} is not mounted by dirtybit mount (no ${STATE_FILE} in it)`,
    );
  }
  if (await stampAlive(state.owner)) {
    Deno.kill(state.owner.pid, "SIGTERM");
    const deadline = Date.now() + timeoutMs;
    while (await Deno.stat(statePath).then(() => true, () => false)) {
      if (!(await stampAlive(state.owner))) break; // died mid-way: finish its work below
      if (Date.now() > deadline) {
        throw new BusyError(
          `umount: the mount process (pid ${state.owner.pid}) did not unmount ${dir} in time: ` +
            `is a file in it still open? Run dirtybit umount ${dir} again`,
        );
      }
      await delay(100);
    }
  }
  await cleanDeadMount(dir);
}

async function readState(path: string): Promise<MountState | null> {
  const state = await readJsonFile<MountState>(path).catch(() => null);
  return state?.tool === "dirtybit mount" ? state : null;
}

/** Removes what a dead mount of `dir` left; refuses while its owner runs. Its pid, if any. */
async function cleanDeadMount(dir: string): Promise<number | undefined> {
  const statePath = join(dir, STATE_FILE);
  const state = await readState(statePath);
  if (!state) return undefined;
  if (await stampAlive(state.owner)) {
    throw new BusyError(
      `${dir} is mounted by dirtybit mount (pid ${state.owner.pid}): run dirtybit umount ${dir} first`,
    );
  }
  await undo(state);
  if (state.nbdfuse && await stampAlive(state.nbdfuse)) Deno.kill(state.nbdfuse.pid, "SIGKILL");
  await removeDirs(state);
  await Deno.remove(statePath).catch(() => {});
  return state.owner.pid;
}

/** Unmounts, detaches and unmounts FUSE: what of `state` is still in place. */
async function undo(state: MountState): Promise<void> {
  const found = leftovers(
    state,
    parseMounts(await Deno.readTextFile("/proc/self/mounts")),
    parseLoops(await tool("losetup", ["--list", "--noheadings", "--raw", "-O", "NAME,BACK-FILE"])),
  );
  const failures: string[] = [];
  for (const path of found.unmount) await unmount(path, failures);
  for (const loop of found.detach) {
    await tool("losetup", ["-d", loop]).catch((err) => failures.push(`${loop}: ${err.message}`));
  }
  if (found.fuse) await unmount(found.fuse, failures);
  if (failures.length > 0) throw new TargetError(`cannot undo the mount: ${failures.join("; ")}`);
}

/** A busy file system (a shell in it) is detached lazily: it goes when the last user leaves. */
async function unmount(path: string, failures: string[]): Promise<void> {
  if (await tool("umount", [path]).then(() => true, () => false)) return;
  await tool("umount", ["-l", path]).catch((err) => failures.push(`${path}: ${err.message}`));
}

async function removeDirs(state: MountState): Promise<void> {
  for (const d of [...state.dirs].reverse()) await Deno.remove(d).catch(() => {});
  await Deno.remove(state.work, { recursive: true }).catch(() => {});
  if (state.socketDir && isSocketDir(state.socketDir)) {
    await Deno.remove(state.socketDir, { recursive: true }).catch(() => {});
  }
}

/** A new name for this mount's socket directory, under the first base that exists. */
async function socketDir(): Promise<string> {
  const bases: string[] = [];
  for (const b of [Deno.env.get("XDG_RUNTIME_DIR"), tmpdir()]) {
    if (b && (await Deno.stat(b).catch(() => null))?.isDirectory) bases.push(b);
  }
  const tag = [...crypto.getRandomValues(new Uint8Array(6))]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
  return socketDirFor(bases, tag);
}

async function startNbdfuse(
  file: string,
  uri: string,
  pidFile: string,
): Promise<Deno.ChildProcess> {
  let child: Deno.ChildProcess;
  try {
    // A session of its own: a Ctrl-C at the terminal reaches mount, which unmounts in order,
    // not nbdfuse, which would drop the disk under the mounted file systems.
    child = helperCommand("setsid", {
      args: ["nbdfuse", "-r", "-P", pidFile, file, uri],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
  } catch (err) {
    throw startError("setsid", err);
  }
  const stderr = new Response(child.stderr).text();
  let exited = false;
  child.status.then(() => exited = true);
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!(await Deno.stat(pidFile).then((s) => s.size > 0, () => false))) {
    if (exited || Date.now() > deadline) {
      if (!exited) child.kill("SIGKILL");
      if ((await child.status).code === 127) {
        throw programMissing("nbdfuse");
      }
      const why = (await stderr).trim().split("\n").pop() || "not ready in time";
      throw new SourceError(
        `nbdfuse did not start: ${why} (is /dev/fuse there and the fuse module loaded?)`,
      );
    }
    await delay(20);
  }
  return child;
}

/** The loop device's partitions, or the whole device when it has no partition table. */
async function partitions(loop: string): Promise<{ name: string; device: string }[]> {
  let parts = await listPartitions(loop);
  if (parts.length === 0) {
    const probe = parseProbe(await tool("blkid", ["-p", "-o", "export", loop]).catch(() => ""));
    if (!probe.ptType) return [{ name: "disk", device: loop }];
    // A kernel built without this table's parser (CONFIG_MSDOS_PARTITION, CONFIG_EFI_PARTITION)
    // adds no partitions for losetup -P: partx reads the table itself and adds them.
    await tool("partx", ["-a", loop]).catch(() => "");
    parts = await listPartitions(loop);
  }
  // devtmpfs makes the nodes of new partitions a moment after the kernel adds them.
  for (const p of parts) {
    for (let i = 0; i < 50 && !(await Deno.stat(p).then(() => true, () => false)); i++) {
      await delay(20);
    }
  }
  return parts.map((device) => ({ name: partitionName(loop, device), device }));
}

async function listPartitions(loop: string): Promise<string[]> {
  const base = loop.split("/").pop()!;
  const found: string[] = [];
  for await (const e of Deno.readDir(`/sys/block/${base}`)) {
    if (new RegExp(`^${base}p[0-9]+$`).test(e.name)) found.push(`/dev/${e.name}`);
  }
  const num = (d: string) => Number(d.slice(d.lastIndexOf("p") + 1));
  return found.sort((a, b) => num(a) - num(b));
}

async function mountPart(
  state: MountState,
  save: () => Promise<void>,
  dir: string,
  name: string,
  device: string,
): Promise<MountedPart> {
  const probe = parseProbe(await tool("blkid", ["-p", "-o", "export", device]).catch(() => ""));
  const why = unmountable(probe);
  if (why) return { name, device, fstype: probe.type, skipped: why };
  const path = join(dir, name);
  const made = !(await Deno.stat(path).then(() => true, () => false));
  if (made) {
    state.dirs.push(path);
    await save();
    await Deno.mkdir(path, { mode: 0o700 });
  } else if (!(await isEmptyDir(path))) {
    return {
      name,
      device,
      fstype: probe.type,
      skipped: `${path} exists and is not an empty directory`,
    };
  }
  state.mounts.push(path);
  await save();
  try {
    await tool("mount", ["-t", probe.type!, "-o", readOnlyOptions(probe.type!), device, path]);
    return { name, device, fstype: probe.type, path };
  } catch (err) {
    state.mounts.pop();
    if (made) {
      await Deno.remove(path).catch(() => {});
      state.dirs.pop();
    }
    await save();
    return { name, device, fstype: probe.type, skipped: (err as Error).message };
  }
}

async function isEmptyDir(path: string): Promise<boolean> {
  try {
    for await (const _ of Deno.readDir(path)) return false;
    return true;
  } catch {
    return false;
  }
}

/** Runs a system tool; its stdout, or an Error with its last stderr line. */
async function tool(program: HelperProgram, args: string[]): Promise<string> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(program, { args, stdin: "null" }).output();
  } catch (err) {
    throw startError(program, err);
  }
  if (!out.success) {
    // util-linux says what failed first (mount adds a line pointing to dmesg).
    const text = new TextDecoder().decode(out.stderr).trim().split("\n")[0];
    throw new TargetError(`${program} ${args.join(" ")}: ${text || `exit ${out.code}`}`);
  }
  return new TextDecoder().decode(out.stdout);
}
