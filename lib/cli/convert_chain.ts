/**
 * Opens a backup chain as a {@link DiskSource} for `dirtybit convert --chain`.
 *
 * @module
 */
import { DependencyError } from "../core/errors.ts";
import type { DiskSource } from "../core/source.ts";

/** The chain's disk as it was at the last stream, read without restoring it first. */
export function openChainSource(_streams: string[]): Promise<DiskSource> {
  return Promise.reject(
    new DependencyError("convert --chain is not available in this build yet"),
  );
}
