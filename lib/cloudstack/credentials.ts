/**
 * Where the CloudStack endpoint, keys and certificate policy come from.
 *
 * Sources, highest precedence first; each setting is taken from the first
 * source that has it:
 *   1. parameters (flags): `url apikey secretkey | secretkey_file verify_ssl ca_file`
 *   2. environment: `DIRTYBIT_URL DIRTYBIT_APIKEY DIRTYBIT_SECRETKEY |
 *      DIRTYBIT_SECRETKEY_FILE DIRTYBIT_VERIFY_SSL DIRTYBIT_CA_FILE`
 *   3. config file (`--config FILE` or `DIRTYBIT_CONFIG`): keys `url apikey
 *      secretkey secretkey_file verify_ssl ca_file`, either a JSON object or
 *      `key = value` lines (`#` starts a comment line); a relative
 *      `secretkey_file` or `ca_file` is relative to the config file.
 *
 * Within one source the secret key may come literally or from a file, not
 * both. Files are preferred: a secret given as a command-line flag is visible
 * in the process list, so it draws a warning. A secret file holds the key on
 * its first line. The secret never appears in a message.
 *
 * @module
 */
import { dirname, isAbsolute, join } from "node:path";
import { InputError, UsageError, type Wording, wrapError } from "../core/errors.ts";

/** Settings as given by one source (all optional). */
export interface CredentialInput {
  url?: string;
  apikey?: string;
  secretkey?: string;
  secretkey_file?: string;
  verify_ssl?: string;
  ca_file?: string;
}

/** Flags of the command line: the settings plus `config`. */
export interface CredentialFlags extends CredentialInput {
  config?: string;
}

/** Everything the client needs. */
export interface CloudStackSettings {
  url: string;
  apiKey: string;
  secretKey: string;
  verifySsl: boolean;
  caFile?: string;
}

const KEYS = ["url", "apikey", "secretkey", "secretkey_file", "verify_ssl", "ca_file"] as const;
type Key = typeof KEYS[number];

/**
 * Resolves settings from flags, environment and config file (see module doc).
 * `warn` receives the warning about a secret on the command line.
 */
export async function loadCredentials(
  flags: CredentialFlags,
  env: Record<string, string | undefined> = Deno.env.toObject(),
  warn: (message: Wording) => void = () => {},
): Promise<CloudStackSettings> {
  const fromEnv: CredentialInput = {};
  for (const key of KEYS) {
    const value = env[`DIRTYBIT_${key.toUpperCase()}`];
    if (value !== undefined && value !== "") fromEnv[key] = value;
  }
  const configPath = flags.config ?? env.DIRTYBIT_CONFIG;
  const fromConfig = configPath ? await readConfig(configPath) : {};
  const sources: [string, CredentialInput][] = [
    ["command line", flags],
    ["environment", fromEnv],
    [`config file ${configPath}`, fromConfig],
  ];
  const pick = (key: Key): [string, string] | undefined => {
    for (const [name, source] of sources) {
      const value = source[key];
      if (value !== undefined && value !== "") return [name, value];
    }
    return undefined;
  };

  const url = pick("url")?.[1];
  if (!url) {
    throw new UsageError((p) =>
      `missing CloudStack url: give ${p("url")}, DIRTYBIT_URL or url in a config file ` +
      "(e.g. https://cloud.example.com/client/api)"
    );
  }
  const apiKey = pick("apikey")?.[1];
  if (!apiKey) {
    throw new UsageError((p) =>
      `missing CloudStack apikey: give ${p("apikey")}, DIRTYBIT_APIKEY or apikey in a config file`
    );
  }
  const secretKey = await pickSecret(sources, warn);
  const verifyText = pick("verify_ssl");
  const verifySsl = verifyText ? parseBool(verifyText) : true;
  const caFile = pick("ca_file")?.[1];
  if (!verifySsl && caFile) {
    throw new UsageError("verify_ssl=false and ca_file conflict: give only one of them");
  }
  return { url, apiKey, secretKey, verifySsl, ...(caFile ? { caFile } : {}) };
}

async function pickSecret(
  sources: [string, CredentialInput][],
  warn: (message: Wording) => void,
): Promise<string> {
  for (const [name, source] of sources) {
    const literal = source.secretkey || undefined;
    const file = source.secretkey_file || undefined;
    if (literal && file) {
      throw new UsageError(`${name}: secretkey and secretkey_file conflict: give only one of them`);
    }
    if (file) return await readSecretFile(file);
    if (literal) {
      if (name === "command line") {
        warn((p) =>
          `${p("secretkey")} given directly is visible to others (a command line in the ` +
          `process list): prefer ${p("secretkey_file")}`
        );
      }
      return literal;
    }
  }
  throw new UsageError((p) =>
    `missing CloudStack secret key: give ${p("secretkey_file")}, DIRTYBIT_SECRETKEY_FILE or ` +
    "secretkey_file in a config file"
  );
}

/** Reads a secret key file: its first line, trimmed; never shows the content. */
export async function readSecretFile(path: string): Promise<string> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw wrapError(
      err,
      UsageError,
      `secret key file '${path}' cannot be read: ${err instanceof Error ? err.name : "error"}`,
    );
  }
  const secret = text.split(/\r?\n/)[0].trim();
  if (!secret) {
    throw new InputError(
      `secret key file '${path}' is empty: put the secret key on its first line`,
    );
  }
  return secret;
}

/** Reads a config file (JSON object or `key = value` lines). */
export async function readConfig(path: string): Promise<CredentialInput> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw wrapError(
      err,
      UsageError,
      `config file '${path}' cannot be read: ${err instanceof Error ? err.name : "error"}`,
    );
  }
  const entries = text.trimStart().startsWith("{")
    ? jsonEntries(path, text)
    : lineEntries(path, text);
  const out: CredentialInput = {};
  for (const [key, value, where] of entries) {
    if (!(KEYS as readonly string[]).includes(key)) {
      throw new InputError(`${where}: unknown key '${key}' (known: ${KEYS.join(", ")})`);
    }
    const relativeFile = (key === "secretkey_file" || key === "ca_file") && !isAbsolute(value);
    out[key as Key] = relativeFile ? join(dirname(path), value) : value;
  }
  return out;
}

function jsonEntries(path: string, text: string): [string, string, string][] {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new InputError(`config file '${path}' is not valid JSON`);
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new InputError(`config file '${path}' must hold a JSON object`);
  }
  return Object.entries(data).map(([key, value]) => {
    if (typeof value !== "string" && typeof value !== "boolean") {
      throw new InputError(`config file '${path}': key '${key}' must be a string`);
    }
    return [key.toLowerCase(), String(value), `config file '${path}'`];
  });
}

function lineEntries(path: string, text: string): [string, string, string][] {
  const out: [string, string, string][] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith("#")) return;
    const eq = line.indexOf("=");
    const where = `config file '${path}' line ${i + 1}`;
    if (eq <= 0) throw new InputError(`${where}: expected 'key = value'`);
    out.push([line.slice(0, eq).trim().toLowerCase(), unquote(line.slice(eq + 1).trim()), where]);
  });
  return out;
}

function unquote(value: string): string {
  const m = /^"(.*)"$|^'(.*)'$/.exec(value);
  return m ? (m[1] ?? m[2]) : value;
}

function parseBool(entry: [string, string]): boolean {
  const t = entry[1].toLowerCase();
  if (["1", "true", "yes", "on"].includes(t)) return true;
  if (["0", "false", "no", "off"].includes(t)) return false;
  throw new UsageError(`verify_ssl from ${entry[0]} must be true or false, not '${entry[1]}'`);
}
