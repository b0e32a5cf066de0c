/**
 * `dirtybit api COMMAND [key=value...]`: one signed CloudStack call, its JSON
 * answer printed on stdout (what operators use cloudmonkey for).
 *
 * @module
 */
import type { Command } from "./command.ts";
import { flagOf, type FlagTable, parseFlags } from "./args.ts";
import { UsageError } from "../core/errors.ts";
import { CloudStackClient } from "../cloudstack/client.ts";
import { loadCredentials } from "../cloudstack/credentials.ts";

const HELP = `
usage: dirtybit api COMMAND [key=value...] [options]

Sends one signed CloudStack API call and prints CloudStack's JSON answer.
  e.g. dirtybit api listVirtualMachines keyword=i-2-10-VM listall=true

options:
  --url URL               API endpoint, e.g. https://cloud.example.com/client/api
  --apikey KEY            API key
  --secretkey-file FILE   file holding the secret key (preferred)
  --secretkey KEY         secret key (visible in the process list: prefer a file)
  --config FILE           config file: JSON object or 'key = value' lines with
                          url, apikey, secretkey_file (or secretkey), verify_ssl, ca_file
  --verify-ssl BOOL       verify the server certificate (default true)
  --ca-file FILE          CA certificate (PEM) of a private CA
  --post                  send the call as a form POST instead of GET
  --signature-version N   1 or 3 (default 3: signature with a 10-minute expiry)
  --help                  this text

Each setting comes from the first of: flags, environment variables
(DIRTYBIT_URL, DIRTYBIT_APIKEY, DIRTYBIT_SECRETKEY_FILE, DIRTYBIT_SECRETKEY,
DIRTYBIT_VERIFY_SSL, DIRTYBIT_CA_FILE, DIRTYBIT_CONFIG), the config file.
Exit 0 on success; 2 bad usage; 5 CloudStack refused or could not be reached.
`;

const FLAGS = {
  url: { type: "string" },
  apikey: { type: "string" },
  secretkey: { type: "string" },
  "secretkey-file": { type: "string", path: true },
  config: { type: "string", path: true },
  "verify-ssl": { type: "string" },
  "ca-file": { type: "string", path: true },
  post: { type: "boolean" },
  "signature-version": { type: "string" },
} as const satisfies FlagTable;

/** Parses `key=value` arguments; a key given twice or without `=` is a usage error. */
export function parseCallParams(args: string[]): Record<string, string> {
  const params: Record<string, string> = {};
  for (const arg of args) {
    const eq = arg.indexOf("=");
    if (eq <= 0) throw new UsageError(`api: '${arg}' is not key=value: see 'dirtybit api --help'`);
    const key = arg.slice(0, eq);
    if (Object.hasOwn(params, key)) throw new UsageError(`api: parameter '${key}' given twice`);
    params[key] = arg.slice(eq + 1);
  }
  return params;
}

/** The `api` subcommand. */
export const apiCommand: Command = {
  name: "api",
  summary: "signed CloudStack API call, JSON answer on stdout (like cloudmonkey)",
  async run(args: string[]): Promise<number> {
    const parsed = parseFlags("api", args, FLAGS, HELP);
    if (!parsed) return 0;
    const [command, ...rest] = parsed.positionals;
    if (!command) throw new UsageError("api: COMMAND is missing: see 'dirtybit api --help'");
    const params = parseCallParams(rest);
    const version = parsed.values["signature-version"] ?? "3";
    if (version !== "1" && version !== "3") {
      throw new UsageError(`api: --signature-version must be 1 or 3, not '${version}'`);
    }
    const warn = (message: string) => console.error(`dirtybit: warning: ${message}`);
    const v = parsed.values;
    const settings = await loadCredentials(
      {
        url: v.url,
        apikey: v.apikey,
        secretkey: v.secretkey,
        secretkey_file: v["secretkey-file"],
        config: v.config,
        verify_ssl: v["verify-ssl"],
        ca_file: v["ca-file"],
      },
      Deno.env.toObject(),
      (w) => warn(w(flagOf)),
    );
    const client = new CloudStackClient(settings, {
      verifySsl: settings.verifySsl,
      caFile: settings.caFile,
      logger: { warn },
      signatureVersion: version === "1" ? 1 : 3,
      post: v.post ?? false,
    });
    try {
      const answer = await client.callRaw(command, params);
      console.log(JSON.stringify(answer, null, 2));
      return 0;
    } finally {
      client.close();
    }
  },
};
