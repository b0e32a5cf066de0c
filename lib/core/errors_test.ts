import assert from "node:assert/strict";
import {
  CancelledError,
  describeError,
  fileSystemError,
  osErrorCode,
  SourceError,
  TargetError,
  TimeoutError,
  typedError,
  UsageError,
  wrapError,
} from "./errors.ts";

function osError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

Deno.test("OS error codes come from code, errno or Deno's '(os error N)'", () => {
  assert.equal(osErrorCode(osError("EROFS", "x")), "EROFS");
  assert.equal(osErrorCode({ errno: 28 }), "ENOSPC");
  assert.equal(osErrorCode(new Error("No space left on device (os error 28)")), "ENOSPC");
  assert.equal(osErrorCode(new Error("plain")), undefined);
  assert.equal(osErrorCode(null), undefined);
});

Deno.test("a failed file-system call names the path: target (6) or usage (2)", () => {
  const full = fileSystemError(
    new Error("No space left on device (os error 28)"),
    "cannot write",
    "/t/x",
  );
  assert.ok(full instanceof TargetError);
  assert.equal(
    full.message,
    "cannot write /t/x: no space left on the device: free space or choose another place",
  );
  const ro = fileSystemError(
    osError("EROFS", "Read-only file system (os error 30)"),
    "cannot open",
    "/r",
  );
  assert.ok(ro instanceof TargetError);
  assert.match(ro.message, /^cannot open \/r: the file system is read-only/);
  const file = fileSystemError(
    osError("EEXIST", "File exists"),
    "cannot create the state directory",
    "/f",
  );
  assert.ok(file instanceof UsageError);
  assert.match(file.message, /\/f: it exists and is not a directory/);
  assert.ok(fileSystemError(osError("ENOTDIR", ""), "cannot read", "/f/a") instanceof UsageError);
  const typed = new SourceError("unreachable");
  assert.equal(fileSystemError(typed, "cannot write", "/x"), typed);
  const other = fileSystemError(new Error("odd"), "cannot write", "/x");
  assert.ok(other instanceof TargetError);
  assert.equal(other.message, "cannot write /x: odd");
});

Deno.test("front ends map stray OS errors, never report them as internal errors", () => {
  const e = typedError(new Error("Read-only file system (os error 30): mkdir '/m/s'"));
  assert.ok(e instanceof TargetError);
  assert.equal(e.exitCode, 6);
  assert.match(e.message, /'\/m\/s'/);
  assert.equal(typedError(new TypeError("bug")), null);
  const typed = new UsageError("u");
  assert.equal(typedError(typed), typed);
});

Deno.test("a wording names parameters the front end's way: the table's by default", () => {
  const err = new UsageError((p) => `VMID 101 is taken: give another ${p("vmid")} or omit it`);
  assert.equal(err.message, "VMID 101 is taken: give another vmid or omit it");
  assert.equal(describeError(err), err.message);
  assert.equal(
    describeError(err, (name) => `--${name}`),
    "VMID 101 is taken: give another --vmid or omit it",
  );
  assert.equal(describeError(new UsageError("plain"), (name) => `--${name}`), "plain");
});

Deno.test("a wrapped error keeps its cause, and a cancel or a timeout its class", () => {
  const io = new Error("connection reset");
  const wrapped = wrapError(io, TargetError, "cannot write x: connection reset");
  assert.ok(wrapped instanceof TargetError);
  assert.equal(wrapped.message, "cannot write x: connection reset");
  assert.equal(wrapped.cause, io);

  const cancel = new CancelledError("backup cancelled");
  const outer = wrapError(wrapError(cancel, SourceError, "read: x"), TargetError, "write: y");
  assert.ok(outer instanceof CancelledError);
  assert.equal(outer.exitCode, 8);
  assert.equal(outer.message, "write: y");
  assert.equal((outer.cause as Error).cause, cancel);

  class RemoteTimeout extends TimeoutError {}
  const late = wrapError(new RemoteTimeout("fsfreeze timed out"), TargetError, "thaw: late");
  assert.ok(late instanceof RemoteTimeout, "the timeout's own class, not just TimeoutError");
  assert.equal(late.exitCode, 5);

  // Another typed error takes the wrapper's class: the wrapping layer knows best.
  assert.ok(wrapError(new UsageError("bad"), TargetError, "t") instanceof TargetError);
  // fileSystemError wraps the same way.
  assert.equal(fileSystemError(io, "cannot write", "/t/x").cause, io);
});
