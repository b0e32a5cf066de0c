/**
 * Process glue of `dirtybit backend`: PTCOMM on stdin/stdout, SIGUSR1 as
 * cancel, and nothing ever on stderr (the FD counts any stderr text as a job
 * error): console output and stray errors go to the log file instead.
 *
 * @module
 */
import { describeError } from "../core/errors.ts";
import { BackendLog } from "./log.ts";
import { PacketReader, PacketWriter } from "./ptcomm.ts";
import { runSession } from "./session.ts";
import type { BackendEngine } from "./engine_port.ts";
import { BACKEND_WORK_DIR } from "../params/state_dir.ts";

/**
 * Bacula's cancel is SIGUSR1. Deno also starts its inspector on SIGUSR1 (and says so on
 * stderr), so the FD should start this through cloudstack_backend.sh, which turns SIGUSR1 into
 * SIGTERM; both cancel.
 */
const CANCEL_SIGNALS: Deno.Signal[] = ["SIGUSR1", "SIGTERM"];

/** After a cancel the process exits by then even if the session has not ended (the FD waits 5 s). */
const CANCEL_EXIT_MS = 4500;

function quietConsole(log: BackendLog): void {
  const sink = (kind: string) => (...args: unknown[]) =>
    log.line(
      `console.${kind}: ${
        args.map((a) => (a instanceof Error ? describeError(a) : String(a))).join(" ")
      }`,
    );
  for (const kind of ["log", "info", "warn", "error", "debug", "trace"] as const) {
    console[kind] = sink(kind);
  }
  globalThis.addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    log.line(`unhandled rejection: ${describeError(e.reason)}`);
  });
  globalThis.addEventListener("error", (e) => {
    e.preventDefault();
    log.line(`uncaught error: ${describeError(e.error)}`);
  });
}

/** Serves one PTCOMM session on this process's stdin/stdout; returns the exit code. */
export async function serveBackend(engine: BackendEngine): Promise<number> {
  const log = new BackendLog();
  quietConsole(log);
  const cancel = new AbortController();
  let onCancelTimeout: ReturnType<typeof setTimeout> | undefined;
  const cancelled = new Promise<number>((resolve) => {
    cancel.signal.addEventListener("abort", () => {
      onCancelTimeout = setTimeout(() => resolve(8), CANCEL_EXIT_MS);
    });
  });
  const onSignal = (name: Deno.Signal) => () => {
    log.line(`${name}: cancel`);
    cancel.abort();
  };
  const listeners = CANCEL_SIGNALS.map((name) => [name, onSignal(name)] as const);
  for (const [name, fn] of listeners) Deno.addSignalListener(name, fn);
  try {
    return await Promise.race([
      runSession({
        reader: new PacketReader(Deno.stdin),
        writer: new PacketWriter(Deno.stdout),
        engine,
        log,
        cancel: cancel.signal,
        defaultWorkDir: BACKEND_WORK_DIR,
      }),
      cancelled,
    ]);
  } finally {
    clearTimeout(onCancelTimeout);
    for (const [name, fn] of listeners) Deno.removeSignalListener(name, fn);
  }
}
