/**
 * From the parameter table (`--vm ... --url ...` flags or a Bacula plugin
 * line, lib/params/params.ts) to a {@link VmSource} or {@link DomainSource}: the CloudStack endpoint and keys come from the
 * parameters, the environment or a config file as `dirtybit api` takes them
 * (lib/cloudstack/credentials.ts); the SSH key defaults to the user's usual
 * key files.
 *
 * @module
 */
import { join } from "node:path";
import { UsageError, type Wording } from "../core/errors.ts";
import { loadCredentials } from "../cloudstack/credentials.ts";
import { accessModeNamed } from "../backup/access_modes.ts";
import type { VmSource } from "../backup/vm_job.ts";
import type { DomainSource } from "../backup/domain_job.ts";
import type { Params } from "./params.ts";

/** Key files tried, in order, when ssh_key is not given. */
const DEFAULT_KEYS = ["id_ed25519", "id_ecdsa", "id_rsa"];

/** The SSH key to use: `ssh_key`, else the first of ~/.ssh/id_{ed25519,ecdsa,rsa} that exists. */
export function sshKeyPath(given: string | undefined, home = Deno.env.get("HOME")): string {
  if (given) return given;
  for (const name of DEFAULT_KEYS) {
    const path = join(home ?? "/root", ".ssh", name);
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch { /* next */ }
  }
  throw new UsageError(
    "parameter ssh_key is missing and ~/.ssh has no id_ed25519, id_ecdsa or id_rsa: give ssh_key",
  );
}

/**
 * The VM source of parsed parameters (`vm` must be set). `config` is a
 * credentials config file (`--config`); `warn` receives warnings such as a
 * secret given on the command line.
 */
export async function vmSourceFromParams(
  params: Params,
  options: { config?: string; warn?: (message: Wording) => void } = {},
): Promise<VmSource> {
  if (!params.vm) throw new UsageError("parameter vm is missing");
  const cloud = await loadCredentials(
    {
      url: params.url,
      apikey: params.apikey,
      secretkey: params.secretkey,
      secretkey_file: params.secretkey_file,
      // The table defaults verify_ssl to true; only a false may override the env or config file.
      verify_ssl: params.verify_ssl === false ? "false" : undefined,
      ca_file: params.ca_file,
      config: options.config,
    },
    Deno.env.toObject(),
    options.warn,
  );
  const accessMode = params.nbd_access_mode ?? "ssh_tunnel";
  return {
    vm: params.vm,
    cloud,
    disks: params.disks,
    accessMode,
    nbdPort: params.nbd_port,
    ssh: {
      user: params.ssh_user,
      port: params.ssh_port,
      // A mode that reads through the CloudStack API never reaches the host.
      keyPath: accessModeNamed(accessMode).kind === "api" ? "" : sshKeyPath(params.ssh_key),
      knownHostsPath: params.known_hosts,
    },
    quiesce: params.quiesce ?? true,
  };
}

/** The libvirt domain source of parsed parameters, or null without `domain`. */
export function domainSourceFromParams(params: Params): DomainSource | null {
  if (params.domain === undefined) return null;
  return {
    domain: params.domain,
    connect: params.connect,
    disks: params.disk,
    excludeDisks: params.exclude_disk,
    scratchDir: params.scratch_dir,
    ...(params.connect?.startsWith("qemu+ssh:")
      ? { ssh: { keyPath: sshKeyPath(params.ssh_key), knownHostsPath: params.known_hosts } }
      : {}),
  };
}
