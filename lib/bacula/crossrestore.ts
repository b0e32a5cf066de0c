/**
 * `cross_restore=proxmox|hyperv|vmware` in a Bacula restore job: the FD hands
 * the chain's files in job order; each is staged as it is (a compressed
 * dirtybit stream, not a disk image) in a staging directory beside the FD's
 * working directory, and at the end of the job (FINISH) the chains are
 * converted and pushed to the target by lib/crossrestore, with the result as
 * job messages. The staged streams are removed whatever the outcome.
 *
 * @module
 */
import { join } from "node:path";
import { UsageError } from "../core/errors.ts";
import type { Params } from "../params/params.ts";
import type { DestSpec } from "../crossrestore/destination.ts";
import type { TargetOption } from "../crossrestore/registry.ts";
import {
  type CrossRestorePlan as TargetPlan,
  planCrossRestore as planTarget,
  planDestination,
  runCrossRestore as crossRestore,
} from "../crossrestore/run.ts";
import type { TargetResult } from "../crossrestore/target.ts";
import type { EngineRestoreTarget } from "./engine_port.ts";
import { StreamFiles } from "./stream_files.ts";

/** The parameter of each target option Bacula has (the CLI-only ones have none). */
const OPTION_PARAMS: Partial<Record<TargetOption, keyof Params>> = {
  vmid: "vmid",
  storage: "storage",
  storageType: "storage_type",
  storageDir: "storage_dir",
  diskFormat: "disk_format",
  bridge: "bridge",
  switchName: "switch",
  network: "network",
};

/** A checked cross-restore request. */
export interface CrossRestorePlan extends TargetPlan {
  name: string;
  dest: DestSpec;
}

/** Checks the cross-restore parameters before any data is accepted. */
export function planCrossRestore(params: Params): CrossRestorePlan {
  const name = params.cross_restore!;
  const given = (Object.keys(OPTION_PARAMS) as TargetOption[]).filter((o) =>
    params[OPTION_PARAMS[o]!] !== undefined
  );
  const plan = planTarget(name, given, {
    option: (o) => `parameter ${OPTION_PARAMS[o]}`,
    target: (t) => `cross_restore=${t}`,
  });
  if (!params.dest) {
    throw new UsageError(
      `cross_restore=${name} needs dest=ssh://user@host[:port]/path (or a local directory)`,
    );
  }
  const dest = planDestination(params.dest, {
    sshKey: params.dest_ssh_key !== undefined,
    remoteShell: params.remote_shell !== undefined,
  });
  return { ...plan, name, dest };
}

/** Streams of one restore job waiting in a private directory. */
export class StagedStreams {
  readonly dir: string;
  readonly #streams = new StreamFiles(false);

  private constructor(dir: string) {
    this.dir = dir;
  }

  /** A fresh, private staging directory for job `jobId` under `root`. */
  static async create(root: string, jobId: number): Promise<StagedStreams> {
    await Deno.mkdir(root, { recursive: true, mode: 0o700 });
    return new StagedStreams(await Deno.makeTempDir({ dir: root, prefix: `job-${jobId}-` }));
  }

  /** The files staged so far, in job order. */
  get files(): readonly string[] {
    return this.#streams.files;
  }

  /** A target that stages one stream file (its header and chain order are checked once written). */
  target(): EngineRestoreTarget {
    const name = `${String(this.#streams.files.length + 1).padStart(4, "0")}.dbit`;
    return this.#streams.target(join(this.dir, name));
  }

  /** Removes the staged streams. */
  async remove(): Promise<void> {
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** What a cross-restore reports while it runs. */
export type Say = (kind: "I" | "W", text: string) => Promise<void>;

/** Converts and pushes the staged chains to the target; reports notes and warnings. */
export function runCrossRestore(
  plan: CrossRestorePlan,
  params: Params,
  streams: readonly string[],
  say: Say,
  log: (line: string) => void,
): Promise<TargetResult> {
  return crossRestore(plan, {
    streams,
    options: {
      vmid: params.vmid,
      storage: params.storage,
      storageType: params.storage_type,
      storageDir: params.storage_dir,
      diskFormat: params.disk_format,
      bridge: params.bridge,
      switchName: params.switch,
      network: params.network,
    },
    dest: plan.dest,
    ssh: params.dest_ssh_key
      ? { keyPath: params.dest_ssh_key, knownHostsPath: params.dest_known_hosts }
      : undefined,
    remoteShell: params.remote_shell,
    register: params.register ?? false,
    onMessage: (kind, text) => say(kind === "info" ? "I" : "W", text),
    startProgress: () => Promise.resolve({ line: log }),
  });
}
