/**
 * The one command-line flag parser: `--flag value`, `--flag=value`,
 * booleans (`--flag`, `--no-flag`, `--flag=false`; a parameter's also
 * `--flag false`), repeatable flags and
 * `--` ending the flags. A command declares its flags once, as a
 * {@link FlagTable}; {@link Parsed} is their type. Flags that are rows of the
 * shared parameter table go through {@link parseParamFlags}, on the same loop.
 * Unknown, repeated and value-less flags are one-line UsageErrors in one
 * wording that name the flag.
 *
 * @module
 */
import { resolve } from "node:path";
import { UsageError } from "../core/errors.ts";
import {
  type ParamName,
  PARAMS,
  type Params,
  type ParamSpec,
  paramToFlag,
  parseBool,
  parseParamEntries,
} from "../params/params.ts";
import { type Compression, COMPRESSION_RULE, parseCompression } from "../stream/compression.ts";

/** How one flag is read. */
export interface FlagSpec {
  readonly type: "string" | "boolean";
  /** Repeatable: the values accumulate in order. */
  readonly multiple?: true;
  /**
   * A path: it comes out absolute (resolved against the working directory;
   * `-`, standard input or output, stays), as QEMU and helper processes with
   * another working directory need it.
   */
  readonly path?: true;
  /** Why the flag is refused (a secret that `ps` would show). */
  readonly refused?: string;
  /**
   * A boolean that also takes a following true/false word (`--quiesce false`),
   * as a parameter does; a command's own switches never take the next
   * argument, which may be a positional.
   */
  readonly word?: true;
}

/** A command's flags, keyed by name without dashes: declare as `{...} as const satisfies FlagTable`. */
export type FlagTable = Readonly<Record<string, FlagSpec>>;

/** The parsed values of a flag table: each present when given. */
export type Parsed<T extends FlagTable> = {
  -readonly [K in keyof T]?: T[K] extends { type: "boolean" } ? boolean
    : T[K] extends { multiple: true } ? string[]
    : string;
};

/** Each of `names` as a flag read as `spec` (a table's rows that differ only in name). */
export function flagsOf<const N extends string, const S extends FlagSpec>(
  names: readonly N[],
  spec: S,
): Record<N, S> {
  return Object.fromEntries(names.map((n) => [n, spec])) as Record<N, S>;
}

/** Parsed flags and positionals, or null when `--help` was printed. */
export interface ParsedArgs<T> {
  values: T;
  positionals: string[];
}

/** A trailing '/' says "a directory": it stays, so that a missing one is reported as such. */
function absolute(p: string): string {
  return p === "-" ? p : p.endsWith("/") && resolve(p) !== "/" ? `${resolve(p)}/` : resolve(p);
}

/** The one error wording of a flag the command cannot take as given. */
function flagError(command: string, problem: string): UsageError {
  return new UsageError(`${command}: ${problem}: see 'dirtybit ${command} --help'`);
}

/**
 * The loop over `args`: flags found by `lookup` (by name without dashes),
 * the rest positionals. A value that starts with a dash is taken only when it
 * is a number (`--flag -5`: the flag's own check then says its range) or `-`.
 */
function readFlags(
  command: string,
  args: readonly string[],
  lookup: (flag: string) => FlagSpec | undefined,
): { values: Record<string, string | boolean | string[]>; positionals: string[] } {
  const values: Record<string, string | boolean | string[]> = {};
  const positionals: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (arg === "-" || !arg.startsWith("-")) {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    let flag = arg.startsWith("--") ? (eq < 0 ? arg.slice(2) : arg.slice(2, eq)) : arg;
    let inline = eq < 0 ? undefined : arg.slice(eq + 1);
    let spec = lookup(flag);
    if (!spec && flag.startsWith("no-") && inline === undefined) {
      const positive = lookup(flag.slice(3));
      if (positive?.type === "boolean") [flag, spec, inline] = [flag.slice(3), positive, "false"];
    }
    const shown = flag.startsWith("-") ? flag : `--${flag}`;
    if (!spec) throw flagError(command, `unknown option ${shown}`);
    if (spec.refused) throw new UsageError(`${command}: --${flag} is refused: ${spec.refused}`);
    let value: string | boolean;
    if (spec.type === "boolean") {
      const word = spec.word && parseBool(args[i + 1] ?? "") !== null;
      const text = inline ?? (word ? args[++i] : "true");
      const b = parseBool(text);
      if (b === null) throw flagError(command, `option --${flag} must be true or false`);
      value = b;
    } else if (inline !== undefined) {
      value = inline;
    } else {
      const next = args[i + 1];
      if (next === undefined || (next.length > 1 && next.startsWith("-") && !/^-\d/.test(next))) {
        throw flagError(command, `option --${flag} needs a value`);
      }
      value = args[++i];
    }
    if (spec.path && typeof value === "string") value = absolute(value);
    const before = values[flag];
    if (spec.multiple) {
      values[flag] = [...(before as string[] | undefined ?? []), value as string];
    } else if (before !== undefined) {
      throw flagError(command, `option --${flag} given twice`);
    } else {
      values[flag] = value;
    }
  }
  return { values, positionals };
}

/**
 * Parses `args` for `command` against its flag table; prints `help` and
 * returns null on `--help` or `-h`.
 */
export function parseFlags<T extends FlagTable>(
  command: string,
  args: string[],
  flags: T,
  help: string,
): ParsedArgs<Parsed<T>> | null {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(help.trim());
    return null;
  }
  const { values, positionals } = readFlags(
    command,
    args,
    (flag) => Object.hasOwn(flags, flag) ? flags[flag] : undefined,
  );
  return { values: values as Parsed<T>, positionals };
}

/** Result of parseParamFlags. */
export interface ParsedParamFlags<E extends FlagTable> {
  params: Params;
  /** Values of the command's own flags (`extra`). */
  extra: Parsed<E>;
  /** Arguments that are not flags (`-` counts as one: stdin). */
  positionals: string[];
}

/** A parameter's flag: list parameters repeat, booleans are booleans, the rest take text. */
function paramFlag(name: ParamName): FlagSpec {
  const spec: ParamSpec = PARAMS[name];
  return {
    ...(spec.kind === "bool" ? { type: "boolean", word: true } : { type: "string" }),
    ...(spec.kind === "list" ? { multiple: true } : {}),
    ...(spec.notAFlag ? { refused: spec.notAFlag } : {}),
  };
}

/**
 * Parses flags that are rows of the parameter table (`--secretkey-file` is
 * `secretkey_file`), restricted to `only` when given, plus the command's own
 * `extra` flags; the parameters are then checked and defaulted like a plugin's.
 */
export function parseParamFlags<E extends FlagTable = Record<never, FlagSpec>>(
  command: string,
  args: string[],
  options: { only?: readonly ParamName[]; extra?: E } = {},
): ParsedParamFlags<E> {
  const extra: FlagTable = options.extra ?? {};
  const { values, positionals } = readFlags(command, args, (flag) => {
    if (Object.hasOwn(extra, flag)) return extra[flag];
    const name = flag.replaceAll("-", "_");
    if (!Object.hasOwn(PARAMS, name)) return undefined;
    if (options.only && !options.only.includes(name as ParamName)) return undefined;
    return paramFlag(name as ParamName);
  });
  const entries: [string, string][] = [];
  const own: Record<string, unknown> = {};
  for (const [flag, value] of Object.entries(values)) {
    if (Object.hasOwn(extra, flag)) own[flag] = value;
    else {
      for (const v of [value].flat()) entries.push([flag.replaceAll("-", "_"), String(v)]);
    }
  }
  return { params: parseParamEntries(entries), extra: own as Parsed<E>, positionals };
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
