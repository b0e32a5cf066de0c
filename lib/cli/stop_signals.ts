/**
 * SIGINT and SIGTERM (a Ctrl-C, Bacula cancelling, systemd stopping) end a
 * command cleanly: the command catches them, passes the abort signal down and
 * undoes what it started, instead of dying half done.
 *
 * @module
 */

/** The stop signals, caught until {@link StopSignals.close}. */
export interface StopSignals {
  /** Aborted by the first SIGINT or SIGTERM. */
  readonly signal: AbortSignal;
  /** Resolves on the first SIGINT or SIGTERM. */
  readonly stopped: Promise<void>;
  /** Stops catching them: a later one ends the process as it would without dirtybit's listeners. */
  close(): void;
}

/**
 * Catches SIGINT and SIGTERM from now on. `releaseOnStop`: the first one also
 * closes, so a second Ctrl-C ends a command that waits for a slow step (a
 * replication cycle) to finish.
 */
export function catchStopSignals(options: { releaseOnStop?: boolean } = {}): StopSignals {
  const controller = new AbortController();
  const onSignal = () => controller.abort();
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  let caught = true;
  const close = () => {
    if (!caught) return;
    caught = false;
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  };
  const stopped = new Promise<void>((resolve) =>
    controller.signal.addEventListener("abort", () => resolve(), { once: true })
  );
  if (options.releaseOnStop) stopped.then(close);
  return { signal: controller.signal, stopped, close };
}

/** Runs `work` with the stop signals caught; they abort its `signal`. */
export async function cancellable<T>(work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const stop = catchStopSignals();
  try {
    return await work(stop.signal);
  } finally {
    stop.close();
  }
}
