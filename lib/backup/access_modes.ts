/**
 * The access modes by name. Adding one is adding its file, its name to
 * lib/core/access_mode_names.ts (the parameter table's values) and one line
 * here.
 *
 * @module
 */
import { ACCESS_MODE_NAMES } from "../core/access_mode_names.ts";
import { UsageError } from "../core/errors.ts";
import type { AccessMode } from "./access_mode.ts";
import { apiOnlyMode } from "./access_api_only.ts";
import { directMode } from "./access_direct.ts";
import { sshTunnelMode } from "./access_ssh_tunnel.ts";

/** Every mode, in the order of {@link ACCESS_MODE_NAMES}: the first is the default. */
export const accessModes: readonly AccessMode[] = [
  sshTunnelMode,
  directMode,
  apiOnlyMode,
];

/** The mode named `name` (default: the first); an unknown name is a UsageError. */
export function accessModeNamed(name?: string): AccessMode {
  if (name === undefined) return accessModes[0];
  const mode = accessModes.find((m) => m.name === name);
  if (!mode) {
    throw new UsageError(
      `unknown nbd_access_mode '${name}': use one of ${ACCESS_MODE_NAMES.join(", ")}`,
    );
  }
  return mode;
}
