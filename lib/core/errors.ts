/**
 * Typed errors. Every layer throws one of these with a one-line message that
 * names what is wrong and what to do; the CLI (lib/cli/main.ts) maps them to
 * exit codes in one place. Anything else reaching the CLI is an internal error.
 *
 * @module
 */

/** Base class: `exitCode` is what the process exits with. */
export class DirtybitError extends Error {
  readonly exitCode: number = 1;
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Bad command line or plugin parameter (unknown, invalid, conflicting). Exit 2. */
export class UsageError extends DirtybitError {
  override readonly exitCode = 2;
}

/**
 * The disk's failover role forbids the step here (fenced, promoted, a replica):
 * an answer, not trouble, so it is never retried. Exit 2.
 */
export class RoleError extends UsageError {}

/** Malformed or corrupt input: a stream, image header, packet, frame or config file. Exit 3. */
export class InputError extends DirtybitError {
  override readonly exitCode = 3;
}

/** A backup chain rule is broken: wrong parent, gap, wrong disk. Exit 4. */
export class ChainError extends DirtybitError {
  override readonly exitCode = 4;
}

/** The source cannot be reached or read: QMP, NBD, SSH, CloudStack, a file. Exit 5. */
export class SourceError extends DirtybitError {
  override readonly exitCode = 5;
}

/** The target cannot be written: restore file, pipe, remote host, replica. Exit 6. */
export class TargetError extends DirtybitError {
  override readonly exitCode = 6;
}

/** A required library or program is missing on this machine. Exit 7. */
export class DependencyError extends DirtybitError {
  override readonly exitCode = 7;
}

/** The job was cancelled (signal, operator). Exit 8. */
export class CancelledError extends DirtybitError {
  override readonly exitCode = 8;
}

/** One line of text for any thrown value, without a stack trace. */
export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message.split("\n")[0];
  return String(err);
}
