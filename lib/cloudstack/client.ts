/**
 * CloudStack API client: signed GET/POST calls with `response=json`,
 * pagination, async-job polling and one-line typed errors. Certificates are
 * verified unless `verifySsl` is false, which logs a warning on every call.
 * Secrets never reach an error or a log line: messages name the command and
 * the endpoint without its query, and every message is scrubbed of the secret
 * key as a last guard.
 *
 * @module
 */
import { SourceError, UsageError, wrapError } from "../core/errors.ts";
import { type ApiKeys, type ApiParams, encodeQuery, signParams } from "./signing.ts";
import {
  FetchTransport,
  type HttpAnswer,
  type Transport,
  UnverifiedTransport,
} from "./transport.ts";
import { delay } from "../core/async.ts";

/** Where the API is and whose keys sign the calls. */
export interface CloudStackEndpoint extends ApiKeys {
  /** API endpoint, e.g. `https://cloud.example.com/client/api`. */
  readonly url: string;
}

/** Receives operator warnings (e.g. `verify_ssl=false`). */
export interface CloudStackLogger {
  warn(message: string): void;
}

/** Client options; all optional. */
export interface CloudStackClientOptions {
  /** Verify the server certificate (default true). */
  readonly verifySsl?: boolean;
  /** PEM file with the private CA that signed the server certificate. */
  readonly caFile?: string;
  /** Where warnings go; the front end passes one (this layer does not print). */
  readonly logger?: CloudStackLogger;
  /** 1 or 3 (default 3: signature with an expiry). */
  readonly signatureVersion?: 1 | 3;
  /** Send every call as a form POST instead of GET (default false). */
  readonly post?: boolean;
  /** Per-request timeout (default 60 s). */
  readonly requestTimeoutMs?: number;
  /** Pause between queryAsyncJobResult polls (default 2 s). */
  readonly pollIntervalMs?: number;
  /** How long to wait for an async job (default 30 min). */
  readonly jobTimeoutMs?: number;
  /** Page size for {@link CloudStackClient.listAll} (default 500). */
  readonly pageSize?: number;
}

/** Per-call overrides. */
export interface CallOptions {
  readonly post?: boolean;
}

/** A JSON object from CloudStack. */
export type ApiObject = Record<string, unknown>;

/** CloudStack answered with an error (HTTP status, errorcode, errortext). */
export class CloudStackApiError extends SourceError {
  constructor(
    message: string,
    readonly command: string,
    readonly httpStatus: number,
    readonly errorCode?: number,
    readonly errorText?: string,
  ) {
    super(message);
  }
}

/** An async job ended in failure, or did not end before the deadline. */
export class CloudStackJobError extends SourceError {
  constructor(message: string, readonly jobId: string, readonly errorCode?: number) {
    super(message);
  }
}

const RESERVED = ["apikey", "signature", "signatureversion", "expires", "response"];
/** The text CloudStack sends with HTTP 401 when it refuses a key or signature. */
export const REFUSED_SIGNATURE_TEXT = "unable to verify user credentials and/or request signature";

/** Signed calls to one CloudStack endpoint. Call {@link close} when done. */
export class CloudStackClient {
  readonly #keys: ApiKeys;
  readonly #url: URL;
  readonly #options: CloudStackClientOptions;
  readonly #logger: CloudStackLogger;
  readonly #transport: Transport;

  constructor(endpoint: CloudStackEndpoint, options: CloudStackClientOptions = {}) {
    this.#url = parseEndpoint(endpoint.url);
    if (!endpoint.apiKey) {
      throw new UsageError((p) =>
        `missing apikey: give ${p("apikey")}, DIRTYBIT_APIKEY or a config file`
      );
    }
    if (!endpoint.secretKey) {
      throw new UsageError((p) =>
        `missing secretkey: give ${p("secretkey_file")}, DIRTYBIT_SECRETKEY_FILE or a config file`
      );
    }
    this.#keys = { apiKey: endpoint.apiKey, secretKey: endpoint.secretKey };
    this.#options = options;
    this.#logger = options.logger ?? { warn: () => {} };
    if (options.verifySsl === false) {
      if (options.caFile) {
        throw new UsageError("ca_file and verify_ssl=false conflict: use one of them");
      }
      this.#transport = new UnverifiedTransport();
    } else {
      this.#transport = new FetchTransport(
        options.caFile ? [readCaFile(options.caFile)] : undefined,
      );
    }
  }

  /** The endpoint without query, safe to show. */
  get endpoint(): string {
    return this.#url.href;
  }

  /** Releases the HTTP client. */
  close(): void {
    this.#transport.close();
  }

  /**
   * Calls `command` and returns CloudStack's whole JSON answer, e.g.
   * `{"listzonesresponse": {...}}` (what `dirtybit api` prints).
   */
  async callRaw(
    command: string,
    params: ApiParams = {},
    options: CallOptions = {},
  ): Promise<ApiObject> {
    checkParams(command, params);
    const signed = signParams({ ...params, command, response: "json" }, this.#keys, {
      signatureVersion: this.#options.signatureVersion ?? 3,
    });
    const post = options.post ?? this.#options.post ?? false;
    const query = encodeQuery(signed);
    const url = new URL(this.#url);
    if (!post) url.search = query;
    if (this.#options.verifySsl === false && url.protocol === "https:") {
      this.#logger.warn(
        `verify_ssl=false: the certificate of ${this.#url.host} is not verified (${command}); ` +
          "anyone on the path can read the API keys' requests: use ca_file outside a lab",
      );
    }
    let answer: HttpAnswer;
    try {
      answer = await this.#transport.send({
        url,
        method: post ? "POST" : "GET",
        body: post ? query : undefined,
        timeoutMs: this.#options.requestTimeoutMs ?? 60_000,
      });
    } catch (err) {
      // No cause: the transport's error can carry the signed URL.
      throw new SourceError(
        this.#scrub(
          `cannot reach CloudStack at ${this.endpoint} (${command}): ${networkReason(err)}`,
        ),
      );
    }
    return this.#interpret(command, answer);
  }

  /** Calls `command` and returns the object inside `<command>response`. */
  async call(
    command: string,
    params: ApiParams = {},
    options: CallOptions = {},
  ): Promise<ApiObject> {
    return unwrap(command, await this.callRaw(command, params, options));
  }

  /**
   * Calls a list command page by page (`page`, `pagesize`) and returns every
   * item under `key` (e.g. `virtualmachine`).
   */
  async listAll(command: string, params: ApiParams, key: string): Promise<ApiObject[]> {
    const pageSize = this.#options.pageSize ?? 500;
    const items: ApiObject[] = [];
    for (let page = 1;; page++) {
      const answer = await this.call(command, {
        ...params,
        page: String(page),
        pagesize: String(pageSize),
      });
      const found = answer[key];
      const batch = Array.isArray(found) ? found as ApiObject[] : [];
      items.push(...batch);
      const total = typeof answer.count === "number" ? answer.count : undefined;
      if (batch.length < pageSize || (total !== undefined && items.length >= total)) return items;
    }
  }

  /**
   * Runs an async command: calls it, then polls queryAsyncJobResult until the
   * job ends and returns its `jobresult`; a failed job throws with
   * CloudStack's errortext, a job still pending at the deadline throws too.
   */
  async callAsync(
    command: string,
    params: ApiParams = {},
    options: CallOptions = {},
  ): Promise<ApiObject> {
    const started = await this.call(command, params, options);
    if (typeof started.jobid !== "string") {
      throw new SourceError(
        `CloudStack answered ${command} without a jobid: is it an async command?`,
      );
    }
    return await this.waitForJob(started.jobid, command);
  }

  /** Polls one async job until it ends or the deadline passes. */
  async waitForJob(jobId: string, command = "async job"): Promise<ApiObject> {
    const deadline = Date.now() + (this.#options.jobTimeoutMs ?? 30 * 60_000);
    const pause = this.#options.pollIntervalMs ?? 2000;
    for (;;) {
      const job = await this.call("queryAsyncJobResult", { jobid: jobId });
      const result = (job.jobresult ?? {}) as ApiObject;
      if (job.jobstatus === 1) return result;
      if (job.jobstatus === 2) {
        const code = typeof result.errorcode === "number" ? result.errorcode : undefined;
        const text = typeof result.errortext === "string"
          ? oneLine(result.errortext)
          : "no errortext";
        throw new CloudStackJobError(
          `CloudStack job ${jobId} (${command}) failed: ${text}${
            code ? ` (errorcode ${code})` : ""
          }`,
          jobId,
          code,
        );
      }
      if (Date.now() + pause > deadline) {
        throw new CloudStackJobError(
          `CloudStack job ${jobId} (${command}) still pending at the deadline; it may yet finish: ` +
            `check with 'dirtybit api queryAsyncJobResult jobid=${jobId}'`,
          jobId,
        );
      }
      await delay(pause);
    }
  }

  /**
   * Opens a download URL that CloudStack handed out (extractVolume) as a
   * stream, with the same certificate policy as the API calls.
   */
  async download(url: string): Promise<ReadableStream<Uint8Array>> {
    let target: URL;
    try {
      target = new URL(url);
    } catch {
      throw new SourceError(`CloudStack gave an invalid download URL`);
    }
    const shown = `${target.origin}${target.pathname}`;
    try {
      const { status, body } = await this.#transport.open(
        target,
        this.#options.requestTimeoutMs ?? 60_000,
      );
      if (status < 200 || status > 299) {
        await body.cancel();
        throw new SourceError(`download of ${shown} failed: HTTP ${status}`);
      }
      return body;
    } catch (err) {
      if (err instanceof SourceError) throw err;
      // No cause, as above.
      throw new SourceError(this.#scrub(`cannot download ${shown}: ${networkReason(err)}`));
    }
  }

  #interpret(command: string, answer: HttpAnswer): ApiObject {
    let json: unknown;
    try {
      json = JSON.parse(answer.body);
    } catch {
      throw new CloudStackApiError(
        `CloudStack at ${this.endpoint} answered ${command} with HTTP ${answer.status} and no JSON: ` +
          "is the url the API endpoint (e.g. http://host:8080/client/api)?",
        command,
        answer.status,
      );
    }
    const inner = isObject(json) ? Object.values(json)[0] : undefined;
    const errorCode = isObject(inner) && typeof inner.errorcode === "number"
      ? inner.errorcode
      : undefined;
    if (answer.status === 200 && errorCode === undefined && isObject(json)) return json;
    const errorText = isObject(inner) && typeof inner.errortext === "string"
      ? oneLine(inner.errortext)
      : "";
    const status = answer.status;
    if (status === 401 || errorCode === 401) {
      const refused = errorText === REFUSED_SIGNATURE_TEXT || errorText === "";
      throw new CloudStackApiError(
        this.#scrub(
          refused
            ? `CloudStack refused the API key or request signature for ${command} (HTTP 401: ${REFUSED_SIGNATURE_TEXT}): ` +
              "check apikey and secretkey, and the clock of this machine"
            : `CloudStack refused ${command}: ${errorText} (HTTP 401)`,
        ),
        command,
        status,
        errorCode,
        errorText,
      );
    }
    const codes = `HTTP ${status}${
      errorCode !== undefined && errorCode !== status ? `, errorcode ${errorCode}` : ""
    }`;
    throw new CloudStackApiError(
      this.#scrub(`CloudStack refused ${command}: ${errorText || "no errortext"} (${codes})`),
      command,
      status,
      errorCode,
      errorText,
    );
  }

  // A last guard; a secret too short to be a real key would mangle every message instead.
  #scrub(message: string): string {
    const secret = this.#keys.secretKey;
    return secret.length < 8 ? message : message.split(secret).join("***");
  }
}

/** The inner `<command>response` object of an answer. */
export function unwrap(command: string, answer: ApiObject): ApiObject {
  const expected = `${command.toLowerCase()}response`;
  const inner = answer[expected] ??
    Object.entries(answer).find(([k]) => k.endsWith("response"))?.[1];
  if (!isObject(inner)) {
    throw new SourceError(`CloudStack's answer to ${command} has no '${expected}' object`);
  }
  return inner;
}

function parseEndpoint(text: string): URL {
  if (!text) {
    throw new UsageError((p) =>
      `missing url: give ${p("url")}, DIRTYBIT_URL or a config file ` +
      "(e.g. https://cloud.example.com/client/api)"
    );
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(
      `url '${text}' is not a URL: give e.g. https://cloud.example.com/client/api`,
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError(`url '${url.origin}' must start with http:// or https://`);
  }
  if (url.username || url.password || url.search || url.hash) {
    throw new UsageError((p) =>
      "url must not carry credentials, a query or a fragment: give keys with " +
      `${p("apikey")}/${p("secretkey_file")}`
    );
  }
  if (url.pathname === "/") url.pathname = "/client/api";
  return url;
}

function readCaFile(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (err) {
    throw wrapError(
      err,
      UsageError,
      `ca_file '${path}' cannot be read: ${err instanceof Error ? err.message : err}`,
    );
  }
}

function checkParams(command: string, params: ApiParams): void {
  if (!/^[A-Za-z][A-Za-z0-9]*$/.test(command)) {
    throw new UsageError(
      `'${command}' is not a CloudStack command name (e.g. listVirtualMachines)`,
    );
  }
  for (const name of Object.keys(params)) {
    if (RESERVED.includes(name.toLowerCase()) || name.toLowerCase() === "command") {
      throw new UsageError(`parameter '${name}' is set by dirtybit itself: leave it out`);
    }
  }
}

// Deno's fetch errors quote the full request URL; keep only the innermost reason, without URLs.
function networkReason(err: unknown): string {
  let reason = err;
  while (reason instanceof Error && reason.cause instanceof Error) reason = reason.cause;
  const text = reason instanceof Error ? reason.message : String(reason);
  const clean = oneLine(text).replace(/\s*\(?for url \([^)]*\)\)?/g, "").replace(
    /https?:\/\/\S+/g,
    "<url>",
  );
  if (/certificate|UnknownIssuer|CaUsedAsEndEntity/i.test(clean)) {
    return `${clean}: the certificate is not trusted (give ca_file for a private CA)`;
  }
  return clean;
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, " ").trim();
}

function isObject(value: unknown): value is ApiObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
