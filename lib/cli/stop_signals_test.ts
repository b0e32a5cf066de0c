import assert from "node:assert/strict";
import { cancellable, catchStopSignals } from "./stop_signals.ts";

/** `promise`, or a failure after 5 s; the timer also keeps the event loop alive (signal listeners do not). */
async function within<T>(promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("no signal within 5 s")), 5000);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

// SIGTERM only: the test runner takes a SIGINT for itself.
Deno.test("a SIGTERM aborts the signal and resolves stopped; close is idempotent", async () => {
  const stop = catchStopSignals();
  try {
    assert.ok(!stop.signal.aborted);
    Deno.kill(Deno.pid, "SIGTERM");
    await within(stop.stopped);
    assert.ok(stop.signal.aborted);
  } finally {
    stop.close();
    stop.close();
  }
});

Deno.test("cancellable: a SIGTERM aborts the work's signal", async () => {
  const aborted = await cancellable((signal) => {
    Deno.kill(Deno.pid, "SIGTERM");
    return within(
      new Promise<boolean>((resolve) =>
        signal.addEventListener("abort", () => resolve(signal.aborted), { once: true })
      ),
    );
  });
  assert.ok(aborted);
});
