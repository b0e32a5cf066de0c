/**
 * The test helpers every test file shares: running a program, a free port,
 * a temporary directory, and asserting a typed rejection. The dirtybit CLI
 * runner is in fixtures/cli.ts, the qemu-storage-daemon bed (`withQsd`) in
 * fixtures/qsd.ts.
 *
 * @module
 */
import assert from "node:assert/strict";

/** How a program ended and what it printed. */
export interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

/** Options of {@link output} and {@link run}. */
export interface RunOptions {
  /** Text for its stdin (default: none, stdin closed). */
  stdin?: string;
  cwd?: string;
  env?: Record<string, string>;
  /** {@link run} only: throw if the program fails (default true). */
  check?: boolean;
}

/** Runs a program to its end, whatever its exit code. */
export async function output(
  program: string,
  args: string[],
  options: RunOptions = {},
): Promise<Output> {
  const child = new Deno.Command(program, {
    args,
    cwd: options.cwd,
    env: options.env,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const out = await child.output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/** Runs a program and returns its stdout; throws with its stderr (or stdout) if it fails. */
export async function run(
  program: string,
  args: string[],
  options: RunOptions = {},
): Promise<string> {
  const r = await output(program, args, options);
  if (r.code !== 0 && options.check !== false) {
    throw new Error(
      `${program} ${args.join(" ")} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`,
    );
  }
  return r.stdout;
}

/** A TCP port on loopback that was free a moment ago (for servers a test configures by port). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Runs `fn` with a new temporary directory, removed afterwards whatever `fn` did. */
export async function withDir<T>(
  fn: (dir: string) => Promise<T> | T,
  prefix = "dirtybit-test-",
): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Awaits `fn` (or the promise), which must reject with an instance of `type`
 * whose message contains `text` (or matches it); returns the error.
 */
export async function assertRejects<E extends Error>(
  fn: (() => Promise<unknown>) | Promise<unknown>,
  type: abstract new (...args: never[]) => E,
  text: string | RegExp = "",
): Promise<E> {
  try {
    await (typeof fn === "function" ? fn() : fn);
  } catch (err) {
    assert.ok(err instanceof type, `expected ${type.name}, got ${err}`);
    if (typeof text === "string") {
      assert.ok(err.message.includes(text), `"${err.message}" does not contain "${text}"`);
    } else {
      assert.match(err.message, text);
    }
    return err;
  }
  throw new Error(`expected a ${type.name} with "${text}", but it resolved`);
}
