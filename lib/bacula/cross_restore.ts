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
import type { Params } from "../cli/params.ts";
import { openChains } from "../crossrestore/chains.ts";
import {
  type Destination,
  type DestSpec,
  LocalDestination,
  parseDest,
} from "../crossrestore/destination.ts";
import { restoreToHyperv } from "../crossrestore/hyperv.ts";
import { preflightWarnings, type TargetKind } from "../crossrestore/preflight.ts";
import { restoreToProxmox } from "../crossrestore/proxmox.ts";
import { posixDialect, powershellDialect } from "../crossrestore/remote_dialect.ts";
import { RemoteDestination } from "../crossrestore/remote_destination.ts";
import type { TargetContext, TargetResult } from "../crossrestore/target.ts";
import { restoreToEsxi } from "../crossrestore/vmware.ts";
import { defaultVmwareHardware } from "../crossrestore/vmware_config.ts";
import type { EngineRestoreTarget } from "./engine_port.ts";
import { StreamFiles } from "./stream_files.ts";

/** Parameters that belong to one target only. */
const ONLY_FOR: [keyof Params, TargetKind][] = [
  ["vmid", "proxmox"],
  ["storage", "proxmox"],
  ["storage_type", "proxmox"],
  ["storage_dir", "proxmox"],
  ["disk_format", "proxmox"],
  ["bridge", "proxmox"],
  ["switch", "hyperv"],
  ["network", "vmware"],
];

/** A checked cross-restore request. */
export interface CrossRestorePlan {
  target: TargetKind;
  dest: DestSpec;
}

/** Checks the cross-restore parameters before any data is accepted. */
export function planCrossRestore(params: Params): CrossRestorePlan {
  const target = params.cross_restore!;
  for (const [name, only] of ONLY_FOR) {
    if (params[name] !== undefined && only !== target) {
      throw new UsageError(`parameter ${name} applies to cross_restore=${only} only`);
    }
  }
  if (!params.dest) {
    throw new UsageError(
      `cross_restore=${target} needs dest=ssh://user@host[:port]/path (or a local directory)`,
    );
  }
  const dest = parseDest(params.dest);
  if (dest.kind === "ssh" && !params.dest_ssh_key) {
    throw new UsageError("parameter dest=ssh://... needs dest_ssh_key=FILE");
  }
  if (dest.kind === "local" && params.remote_shell) {
    throw new UsageError("parameter remote_shell needs an ssh:// dest");
  }
  return { target, dest };
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

async function openDestination(
  plan: CrossRestorePlan,
  params: Params,
): Promise<Destination> {
  if (plan.dest.kind === "local") return new LocalDestination(plan.dest.dir);
  const shell = params.remote_shell ?? (plan.target === "hyperv" ? "powershell" : "posix");
  return await RemoteDestination.connect({
    target: {
      host: plan.dest.host,
      port: plan.dest.port,
      user: plan.dest.user,
      keyPath: params.dest_ssh_key!,
      knownHostsPath: params.dest_known_hosts,
    },
    root: plan.dest.path,
    dialect: shell === "posix" ? posixDialect : powershellDialect,
  });
}

/** Converts and pushes the staged chains to the target; reports notes and warnings. */
export async function runCrossRestore(
  plan: CrossRestorePlan,
  params: Params,
  streams: readonly string[],
  say: Say,
  log: (line: string) => void,
): Promise<TargetResult> {
  const chains = await openChains([...streams]);
  let dest: Destination | undefined;
  try {
    const hw = plan.target === "vmware"
      ? defaultVmwareHardware(chains.definition, { network: params.network })
      : undefined;
    for (const note of chains.notes) await say("I", note);
    const warnings = preflightWarnings(chains.definition, plan.target, {
      controller: hw?.controller,
      nicModel: hw?.nic,
    });
    for (const w of warnings) await say("W", w);
    dest = await openDestination(plan, params);
    const ctx: TargetContext = {
      dest,
      chains,
      register: params.register ?? false,
      progress: log,
    };
    if (plan.target === "proxmox") {
      return await restoreToProxmox(ctx, {
        vmid: params.vmid,
        storage: params.storage,
        storageType: params.storage_type,
        storageDir: params.storage_dir,
        diskFormat: params.disk_format,
        bridge: params.bridge,
      });
    }
    if (plan.target === "hyperv") return await restoreToHyperv(ctx, { switchName: params.switch });
    return await restoreToEsxi(ctx, hw!);
  } finally {
    await dest?.close();
    await chains.close();
  }
}
