/**
 * Command-line flag parsing on top of `node:util` parseArgs: `--help` handling
 * and parse errors as one-line UsageErrors that name the flag.
 *
 * @module
 */
import { resolve } from "node:path";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { UsageError } from "../core/errors.ts";
import { paramToFlag } from "../params/params.ts";
import { type Compression, COMPRESSION_RULE, parseCompression } from "../stream/compression.ts";

type Options = NonNullable<ParseArgsConfig["options"]>;

/** Parsed flags and positionals, or null when `--help` was printed. */
export interface ParsedArgs<T> {
  values: T;
  positionals: string[];
}

/**
 * Parses `args` for `command`; prints `help` and returns null on `--help`.
 * Unknown flags and missing values become a UsageError. The values of the
 * flags named in `paths` come out absolute (resolved against the working
 * directory; `-`, standard input or output, stays), as QEMU and helper
 * processes with another working directory need them.
 */
export function parseFlags<T = Record<string, string | boolean | string[] | undefined>>(
  command: string,
  args: string[],
  options: Options,
  help: string,
  paths: readonly string[] = [],
): ParsedArgs<T> | null {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(help.trim());
    return null;
  }
  try {
    const { values, positionals } = parseArgs({
      args: negativeValuesJoined(args, options),
      options,
      allowPositionals: true,
      strict: true,
    });
    // A trailing '/' says "a directory": it stays, so that a missing one is reported as such.
    const absolute = (p: string) =>
      p === "-" ? p : p.endsWith("/") && resolve(p) !== "/" ? `${resolve(p)}/` : resolve(p);
    for (const name of paths) {
      const v = values[name];
      if (typeof v === "string") values[name] = absolute(v);
      else if (Array.isArray(v)) {
        values[name] = v.map((p) => typeof p === "string" ? absolute(p) : p);
      }
    }
    return { values: values as T, positionals };
  } catch (err) {
    const msg = (err as Error).message.split("\n")[0].replace(/\. To specify.*$/, "");
    throw new UsageError(`${command}: ${msg}: see 'dirtybit ${command} --help'`);
  }
}

/**
 * `--flag -5` as `--flag=-5` for a flag that takes a value: parseArgs calls a
 * value that starts with a dash ambiguous, and the flag's own check then says
 * what range it must be in.
 */
function negativeValuesJoined(args: string[], options: Options): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const name = args[i].startsWith("--") && !args[i].includes("=") ? args[i].slice(2) : "";
    if (options[name]?.type === "string" && /^-\d/.test(args[i + 1] ?? "")) {
      out.push(`${args[i]}=${args[++i]}`);
    } else {
      out.push(args[i]);
    }
  }
  return out;
}

/** A required flag's value, or a UsageError naming it. */
export function required(command: string, name: string, value: string | undefined): string {
  if (!value) {
    throw new UsageError(`${command}: --${name} is required: see 'dirtybit ${command} --help'`);
  }
  return value;
}

/** Parses a choice flag against its allowed values. */
export function choice<T extends string>(
  command: string,
  name: string,
  value: string | undefined,
  allowed: readonly T[],
  fallback: T,
): T {
  if (value === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(value)) {
    throw new UsageError(
      `${command}: --${name} must be one of ${allowed.join(", ")}, not '${value}'`,
    );
  }
  return value as T;
}

/** An optional integer flag from `min` to `max`, or a UsageError naming it. */
export function integer(
  command: string,
  name: string,
  text: string | undefined,
  min: number,
  max: number,
): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new UsageError(
      `${command}: --${name} must be an integer from ${min} to ${max}, not '${text}'`,
    );
  }
  return n;
}

/** An optional `--compress` flag as a parsed compression, or a UsageError in the one wording. */
export function compressionFlag(
  command: string,
  text: string | undefined,
): Compression | undefined {
  if (text === undefined) return undefined;
  const c = parseCompression(text);
  if (c === null) throw new UsageError(`${command}: --compress '${text}': ${COMPRESSION_RULE}`);
  return c;
}

/** Parameters whose flag is not their name with dashes: `restore --to`'s own words. */
const OWN_FLAGS: Record<string, string> = {
  cross_restore: "--to",
  dest_ssh_key: "--ssh-key",
  dest_known_hosts: "--known-hosts",
};

/** The CLI's spelling of a parameter that an error names (`take_over` is `--take-over`). */
export function flagOf(param: string): string {
  return OWN_FLAGS[param] ?? paramToFlag(param);
}
