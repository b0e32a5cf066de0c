/**
 * Random-access disk targets, where a restore and a replica write: one small
 * file per kind (raw file, qcow2 through qemu-nbd, a VM's own disk over
 * QEMU's NBD server) behind this interface, like nbdcopy's sinks.
 *
 * @module
 */

/** A random-access disk being written (restored into, or a replica). */
export interface RestoreTarget {
  /** Virtual size in bytes. */
  readonly size: number;
  writeData(offset: number, data: Uint8Array): Promise<void>;
  /** Makes `[offset, offset+length)` read as zeros (deallocating where the format can). */
  writeZero(offset: number, length: number): Promise<void>;
  /** Makes everything written so far durable. */
  flush(): Promise<void>;
  /** Releases the file or helper process. Safe to call twice. */
  close(): Promise<void>;
}

/** Image formats a restore can produce. */
export type RestoreFormat = "raw" | "qcow2";

/** The format implied by a file name (`.qcow2` means qcow2, anything else raw). */
export function formatFromPath(path: string): RestoreFormat {
  return path.endsWith(".qcow2") ? "qcow2" : "raw";
}
