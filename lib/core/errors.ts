/**
 * Typed errors. Every layer throws one of these with a one-line message that
 * names what is wrong and what to do; each front end (lib/cli/main.ts, the
 * Bacula session) maps them to exit codes in one place through typedError.
 * Anything else reaching a front end is an internal error.
 *
 * @module
 */

/** How a front end spells a parameter of the table (`take_over`): `--take-over` on the CLI. */
export type ParamSpelling = (param: string) => string;

/**
 * A message that names parameters: below the front ends a message does not
 * know whether a flag or a plugin parameter was given, so it takes the
 * front end's spelling (`p("vmid")`).
 */
export type Wording = (p: ParamSpelling) => string;

/** The table's own spelling, which the Bacula plugin's parameters and config files use. */
const TABLE_SPELLING: ParamSpelling = (param) => param;

/**
 * Base class: `exitCode` is what the process exits with. The message is a
 * string, or a {@link Wording} whose parameters {@link describeError} spells
 * the front end's way (`message` holds the table spelling).
 */
export class DirtybitError extends Error {
  readonly exitCode: number = 1;
  readonly wording?: Wording;
  constructor(message: string | Wording, options?: ErrorOptions) {
    super(typeof message === "string" ? message : message(TABLE_SPELLING), options);
    this.name = new.target.name;
    if (typeof message !== "string") this.wording = message;
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

/**
 * Someone else is at work on the same thing: a job holds the state directory
 * or the disk. Exit 2, as a retry later (not a fix of the source) is the
 * remedy and scripts already treat it so.
 */
export class BusyError extends DirtybitError {
  override readonly exitCode = 2;
}

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

/**
 * A wait that ran out: a remote command, an event, a guest agent. Exit 5, as
 * what did not answer is the source; wrapping keeps the class (see wrapError).
 */
export class TimeoutError extends SourceError {}

/** The class of a typed error, to make another of the same kind. */
export type ErrorClass = new (message: string | Wording, options?: ErrorOptions) => DirtybitError;

/**
 * A layer's error for a failure below it: `Kind` with `message`, the failure
 * as its cause. A cancel stays a cancel and a timeout a timeout (of its own
 * class, whatever `Kind` is), so the front end's exit code and a retry loop
 * see what really happened however many layers wrapped it.
 */
export function wrapError(
  err: unknown,
  Kind: ErrorClass,
  message: string | Wording,
): DirtybitError {
  const kept = err instanceof CancelledError || err instanceof TimeoutError
    ? err.constructor as ErrorClass
    : Kind;
  return new kept(message, { cause: err });
}

/**
 * One line of text for any thrown value, without a stack trace; `spelling`
 * names the parameters of a {@link Wording} (default: the table's, `take_over`).
 */
export function describeError(err: unknown, spelling?: ParamSpelling): string {
  if (err instanceof DirtybitError && err.wording && spelling) {
    return err.wording(spelling).split("\n")[0];
  }
  if (err instanceof Error) return err.message.split("\n")[0];
  return String(err);
}

/** OS error codes of a file-system call and what they mean for the user. */
const FS_PROBLEMS: Record<string, { problem: string; usage?: boolean }> = {
  ENOSPC: { problem: "no space left on the device: free space or choose another place" },
  EDQUOT: { problem: "disk quota exceeded: free space or choose another place" },
  EROFS: { problem: "the file system is read-only: choose a writable place" },
  EACCES: { problem: "permission denied: check its owner and mode" },
  EPERM: { problem: "operation not permitted: check its owner and mode" },
  EIO: { problem: "input/output error on the device" },
  EFBIG: { problem: "file too large for this file system" },
  ENOTDIR: { problem: "a part of the path is a file, not a directory", usage: true },
  EEXIST: { problem: "it exists and is not a directory", usage: true },
  EISDIR: { problem: "is a directory, a file is expected here", usage: true },
  ENAMETOOLONG: { problem: "the path is too long", usage: true },
  ENOENT: { problem: "it does not exist (or a directory above it does not)", usage: true },
};

/** The OS error code (`ENOSPC`...) of a thrown value, if it has one. */
export function osErrorCode(err: unknown): string | undefined {
  const { code, errno } = (err ?? {}) as { code?: unknown; errno?: unknown };
  if (typeof code === "string" && /^E[A-Z]+$/.test(code)) return code;
  if (typeof errno === "number" && ERRNO_CODES[errno]) return ERRNO_CODES[errno];
  // Deno reports some errors only by message: "No space left on device (os error 28)".
  const n = /\(os error (\d+)\)/.exec(err instanceof Error ? err.message : "")?.[1];
  return n === undefined ? undefined : ERRNO_CODES[Number(n)];
}

const ERRNO_CODES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  5: "EIO",
  13: "EACCES",
  17: "EEXIST",
  20: "ENOTDIR",
  21: "EISDIR",
  27: "EFBIG",
  28: "ENOSPC",
  30: "EROFS",
  36: "ENAMETOOLONG",
  122: "EDQUOT",
};

/**
 * A failed file-system call on `path` as a typed error naming it: the target
 * cannot be written (exit 6), or the path is of the wrong kind (a usage error,
 * exit 2). `doing` says what was attempted ("cannot create the state directory").
 * Typed errors without an OS error code pass through unchanged; the original
 * error stays the cause.
 */
export function fileSystemError(err: unknown, doing: string, path: string): DirtybitError {
  const known = FS_PROBLEMS[osErrorCode(err) ?? ""];
  if (!known) {
    if (err instanceof DirtybitError) return err;
    return wrapError(err, TargetError, `${doing} ${path}: ${describeError(err)}`);
  }
  const Kind = known.usage ? UsageError : TargetError;
  return new Kind(`${doing} ${path}: ${known.problem}`, { cause: err });
}

/** What C tools (qemu-img, qemu-nbd) print for the errors of {@link FS_PROBLEMS}. */
const STRERROR: Record<string, string> = {
  "No space left on device": "ENOSPC",
  "Disk quota exceeded": "EDQUOT",
  "Read-only file system": "EROFS",
  "Permission denied": "EACCES",
  "Not a directory": "ENOTDIR",
  "Is a directory": "EISDIR",
  "No such file or directory": "ENOENT",
};

/**
 * A helper program's failure on the target `path` (its last stderr line in
 * `text`): like {@link fileSystemError} when the text names an OS error,
 * else a TargetError that quotes the text.
 */
export function toolTargetError(text: string, doing: string, path: string): DirtybitError {
  const code = Object.entries(STRERROR).find(([said]) => text.includes(said))?.[1];
  if (code) return fileSystemError({ code, message: text }, doing, path);
  return new TargetError(`${doing} ${path}: ${text}`);
}

/**
 * The typed error a front end reports for `err`: itself when typed, an OS
 * file-system error as a TargetError (its message names the path where Deno
 * gives it), or null for a real internal error.
 */
export function typedError(err: unknown): DirtybitError | null {
  if (err instanceof DirtybitError) return err;
  const known = FS_PROBLEMS[osErrorCode(err) ?? ""];
  if (!known) return null;
  const Kind = known.usage ? UsageError : TargetError;
  return new Kind(describeError(err), { cause: err });
}
