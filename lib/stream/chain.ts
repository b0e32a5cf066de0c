/**
 * Backup chain rules: which stream may be applied after which. Pure logic.
 *
 * @module
 */
import { ChainError } from "../core/errors.ts";
import type { StreamHeader } from "./format.ts";

function describe(h: StreamHeader): string {
  return `${h.level} backup '${h.backupId}'`;
}

/**
 * Checks that `next` may be applied on top of `prev` (the last stream applied,
 * or null before the first). A chain is a full, then incrementals each based
 * on the previous stream, where a differential may come right after its full.
 * Throws ChainError naming both streams.
 */
export function checkChainOrder(prev: StreamHeader | null, next: StreamHeader): void {
  if (prev === null) {
    if (next.level !== "full") {
      throw new ChainError(
        `${
          describe(next)
        } cannot start a restore: give its full backup first (chain '${next.chainId}')`,
      );
    }
    return;
  }
  if (next.level === "full") {
    throw new ChainError(
      `${describe(next)} starts a new chain and cannot follow ${
        describe(prev)
      }: restore it on its own`,
    );
  }
  if (next.disk !== prev.disk) {
    throw new ChainError(
      `${describe(next)} is of disk '${next.disk}', not '${prev.disk}' of ${describe(prev)}`,
    );
  }
  if (next.chainId !== prev.chainId) {
    throw new ChainError(
      `${describe(next)} belongs to chain '${next.chainId}', not '${prev.chainId}' of ${
        describe(prev)
      }`,
    );
  }
  if (next.virtualSize !== prev.virtualSize) {
    throw new ChainError(
      `${describe(next)} has disk size ${next.virtualSize}, ${
        describe(prev)
      } has ${prev.virtualSize}: the disk was resized, start from a new full`,
    );
  }
  if (next.level === "differential" && prev.level !== "full") {
    throw new ChainError(
      `${describe(next)} applies only directly on its full backup '${next.parentId}', not after ${
        describe(prev)
      }`,
    );
  }
  if (next.parentId !== prev.backupId) {
    throw new ChainError(
      `${describe(next)} is based on '${next.parentId}', but the last stream applied is ${
        describe(prev)
      }: give the streams in chain order without gaps`,
    );
  }
}
