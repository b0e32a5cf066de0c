/**
 * HTTP(S) for the CloudStack client: certificates verified by default (with an
 * optional private CA), or, only when the operator turns verification off,
 * node:https with `rejectUnauthorized: false` (Deno's fetch has no such switch
 * short of a process-wide flag).
 *
 * @module
 */
import https from "node:https";
import { Readable } from "node:stream";
import { concatBytes } from "../core/bytes.ts";

/** Status and text of one answer. */
export interface HttpAnswer {
  readonly status: number;
  readonly body: string;
}

/** One HTTP request: `body` set means a form POST. */
export interface HttpRequest {
  readonly url: URL;
  readonly method: "GET" | "POST";
  readonly body?: string;
  readonly timeoutMs: number;
}

/** The client's way to the network. */
export interface Transport {
  send(request: HttpRequest): Promise<HttpAnswer>;
  /** Streams a body (e.g. an extractVolume URL); rejects on a non-2xx status. */
  open(url: URL, timeoutMs: number): Promise<{ status: number; body: ReadableStream<Uint8Array> }>;
  close(): void;
}

const FORM = "application/x-www-form-urlencoded";

/** fetch with certificate verification; `caCerts` (PEM) adds trusted roots. */
export class FetchTransport implements Transport {
  readonly #client?: Deno.HttpClient;

  constructor(caCerts?: string[]) {
    if (caCerts?.length) this.#client = Deno.createHttpClient({ caCerts });
  }

  async send(request: HttpRequest): Promise<HttpAnswer> {
    const response = await fetch(request.url, {
      method: request.method,
      body: request.body,
      headers: {
        accept: "application/json",
        ...(request.body === undefined ? {} : { "content-type": FORM }),
      },
      signal: AbortSignal.timeout(request.timeoutMs),
      client: this.#client,
    });
    return { status: response.status, body: await response.text() };
  }

  async open(url: URL, timeoutMs: number) {
    const response = await fetch(url, {
      client: this.#client,
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (!response.body) throw new Error(`HTTP ${response.status} without a body`);
    return { status: response.status, body: response.body };
  }

  close(): void {
    this.#client?.close();
  }
}

/** node:https without certificate verification, for `verify_ssl=false`. */
export class UnverifiedTransport implements Transport {
  // Plain http has no certificate to skip.
  readonly #plain = new FetchTransport();

  send(request: HttpRequest): Promise<HttpAnswer> {
    if (request.url.protocol !== "https:") return this.#plain.send(request);
    return new Promise((resolve, reject) => {
      const req = https.request(request.url, {
        method: request.method,
        rejectUnauthorized: false,
        timeout: request.timeoutMs,
        headers: {
          accept: "application/json",
          ...(request.body === undefined ? {} : { "content-type": FORM }),
        },
      }, (res) => {
        const chunks: Uint8Array[] = [];
        res.on("data", (chunk: Uint8Array) => chunks.push(chunk));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            body: new TextDecoder().decode(concatBytes(...chunks)),
          }));
        res.on("error", reject);
      });
      req.on("timeout", () => req.destroy(new Error("timed out")));
      req.on("error", reject);
      req.end(request.body);
    });
  }

  open(url: URL, timeoutMs: number) {
    if (url.protocol !== "https:") return this.#plain.open(url, timeoutMs);
    return new Promise<{ status: number; body: ReadableStream<Uint8Array> }>((resolve, reject) => {
      const req = https.get(url, { rejectUnauthorized: false, timeout: timeoutMs }, (res) => {
        resolve({
          status: res.statusCode ?? 0,
          body: Readable.toWeb(res) as ReadableStream<Uint8Array>,
        });
      });
      req.on("timeout", () => req.destroy(new Error("timed out")));
      req.on("error", reject);
    });
  }

  close(): void {
    this.#plain.close();
  }
}
