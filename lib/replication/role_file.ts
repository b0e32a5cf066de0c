/**
 * Persistence of a disk's {@link DiskRole}: `DIR/NAME.role.json`, written
 * atomically. DIR is the sender's state directory or the receiver's replica
 * directory; a disk without a file has its initial role for that side.
 *
 * @module
 */
import { join } from "node:path";
import { readJsonFile, writeFileAtomic } from "../core/atomic_file.ts";
import { name as checkName } from "./messages.ts";
import { type DiskRole, initialRole, type Role } from "./roles.ts";
import { makeDirectory } from "../core/files.ts";

/** Reads a disk's role; `side` gives the role it has before any failover. */
export async function loadRole(dir: string, name: string, side: Role): Promise<DiskRole> {
  return (await readJsonFile<DiskRole>(rolePath(dir, name))) ?? initialRole(name, side);
}

/** Writes a disk's role durably. */
export async function saveRole(dir: string, role: DiskRole): Promise<void> {
  await makeDirectory(dir, "the directory of the role file");
  await writeFileAtomic(rolePath(dir, role.name), JSON.stringify(role, null, 2) + "\n");
}

function rolePath(dir: string, name: string): string {
  return join(dir, `${checkName(name)}.role.json`);
}
