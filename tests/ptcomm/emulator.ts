/**
 * An FD-side PTCOMM emulator (docs/ptcomm.md): spawns a backend
 * process and drives it byte for byte as Bacula 13's metaplugin does, with
 * timeouts on every wait so a misbehaving backend fails a test instead of
 * hanging it. It records everything the backend said.
 *
 * @module
 */
import {
  encodePacket,
  type Packet,
  type PacketKind,
  PacketReader,
  packetText,
} from "../../lib/bacula/ptcomm.ts";
import { concatBytes } from "../../lib/core/bytes.ts";

/** A message packet the backend sent (I, W, E, A, ...). */
export interface JobMessage {
  kind: PacketKind;
  text: string;
}

/** A file the backend sent during a backup or estimate. */
export interface BackedUpFile {
  fname: string;
  attrs: string[];
  data: Uint8Array | null;
  /** Sizes of the D packets, in order. */
  packetSizes: number[];
}

const MESSAGE_KINDS = new Set(["I", "W", "E", "A", "S", "N", "R", "P", "O", "V", "Q"]);
const enc = new TextEncoder();

/** The backend answered something else than the emulator expected. */
export class EmulatorError extends Error {}

/** One backend process under the emulator's control. */
export class FdEmulator {
  readonly process: Deno.ChildProcess;
  readonly messages: JobMessage[] = [];
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #reader: PacketReader;
  readonly #stderr: Promise<string>;
  readonly timeoutMs: number;

  constructor(
    command: string[],
    options: { cwd?: string; timeoutMs?: number; env?: Record<string, string> } = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? 60_000;
    this.process = new Deno.Command(command[0], {
      args: command.slice(1),
      cwd: options.cwd,
      env: options.env,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#stdin = this.process.stdin.getWriter();
    // Reads as an FD does: whatever the pipe holds, straight into the packet buffer.
    this.#reader = new PacketReader(this.process.stdout);
    this.#stderr = new Response(this.process.stderr).text();
  }

  /** Sends raw bytes (for malformed input). */
  async raw(bytes: Uint8Array | string): Promise<void> {
    await this.#stdin.write(typeof bytes === "string" ? enc.encode(bytes) : bytes);
  }

  /** Sends one packet as the plugin does (commands end with `\n`). */
  async send(kind: PacketKind, payload: Uint8Array | string = ""): Promise<void> {
    await this.#stdin.write(encodePacket(kind, payload));
  }

  /** Sends a command line. */
  command(text: string): Promise<void> {
    return this.send("C", `${text}\n`);
  }

  /** Closes the backend's stdin (the plugin went away). */
  async closeInput(): Promise<void> {
    await this.#stdin.close().catch(() => {});
  }

  #timeout<T>(p: Promise<T>, what: string): Promise<T> {
    let timer: ReturnType<typeof setTimeout>;
    const t = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new EmulatorError(
              `backend did not answer within ${this.timeoutMs} ms: waiting for ${what}`,
            ),
          ),
        this.timeoutMs,
      );
    });
    return Promise.race([p, t]).finally(() => clearTimeout(timer));
  }

  /**
   * The next non-message packet (messages are recorded), or null at EOF. A
   * `transient` packet's payload is only valid until the next call.
   */
  async next(what = "a packet", transient = false): Promise<Packet | null> {
    for (;;) {
      const read = transient ? this.#reader.readTransient() : this.#reader.read();
      const p = await this.#timeout(read, what);
      if (p && MESSAGE_KINDS.has(p.kind)) {
        this.messages.push({ kind: p.kind, text: packetText(p) });
        if (p.kind === "E" || p.kind === "A") return p;
        continue;
      }
      return p;
    }
  }

  /** Expects a packet of `kind` (and text, for C); returns its text. */
  async expect(kind: PacketKind, text?: string): Promise<string> {
    const p = await this.next(`${kind}${text ? ` ${text}` : ""}`);
    const got = p ? `${p.kind} '${packetText(p).slice(0, 200)}'` : "EOF";
    if (!p || p.kind !== kind || (text !== undefined && packetText(p) !== text)) {
      throw new EmulatorError(`expected ${kind}${text ? ` '${text}'` : ""}, got ${got}`);
    }
    return packetText(p);
  }

  /** Hello, Job block, Params block (docs/ptcomm.md §3), each acknowledged as the plugin requires. */
  async open(job: string[], params: string[], plugin = "cloudstack"): Promise<void> {
    await this.hello(plugin);
    await this.block("Job", job);
    await this.expect("F");
    await this.block("Params", params);
    await this.expect("F");
  }

  /** The Hello handshake (docs/ptcomm.md §3), expecting the backend's greeting. */
  async hello(plugin = "cloudstack"): Promise<void> {
    await this.command(`Hello ${plugin} 1`);
    await this.expect("C", "Hello Bacula");
  }

  /** A Job or Params block: its name, its lines, then F; the caller awaits the answer. */
  async block(name: string, lines: string[]): Promise<void> {
    await this.command(name);
    for (const line of lines) await this.command(line);
    await this.send("F");
  }

  /** Reads a backup or estimate stream up to its final F (docs/ptcomm.md §4). */
  async readFiles(withData: boolean, keepData = true): Promise<BackedUpFile[]> {
    const files: BackedUpFile[] = [];
    for (;;) {
      const p = await this.next("FNAME or the final F");
      if (p?.kind === "F") return files;
      if (p?.kind !== "C" || !packetText(p).startsWith("FNAME:")) {
        throw new EmulatorError(
          `expected FNAME or F, got ${p ? `${p.kind} '${packetText(p)}'` : "EOF"}`,
        );
      }
      const file: BackedUpFile = {
        fname: packetText(p).slice(6),
        attrs: [],
        data: null,
        packetSizes: [],
      };
      for (;;) {
        const a = await this.next("an attribute or F");
        if (a?.kind === "F") break;
        if (a?.kind !== "C") {
          throw new EmulatorError(`expected an attribute, got ${a?.kind ?? "EOF"}`);
        }
        file.attrs.push(packetText(a));
      }
      if (!file.attrs.some((a) => a.startsWith("STAT:"))) {
        throw new EmulatorError(`${file.fname} without STAT`);
      }
      if (withData) {
        const body = await this.next("DATA or F");
        if (body?.kind === "C" && packetText(body) === "DATA") {
          const parts: Uint8Array[] = [];
          for (;;) {
            const d = await this.next("D or F", !keepData);
            if (d?.kind === "F") break;
            if (d?.kind !== "D") {
              throw new EmulatorError(`expected D or F, got ${d?.kind ?? "EOF"}`);
            }
            if (keepData) parts.push(d.payload);
            file.packetSizes.push(d.payload.length);
          }
          file.data = concatBytes(...parts);
        } else if (body?.kind !== "F") {
          throw new EmulatorError(`expected DATA or F as the body, got ${body?.kind ?? "EOF"}`);
        }
      }
      files.push(file);
    }
  }

  /** END/F then T (docs/ptcomm.md §3). */
  async end(): Promise<void> {
    await this.command("END");
    await this.expect("F");
    await this.send("T");
    await this.closeInput();
  }

  /**
   * Offers one file for restore (docs/ptcomm.md §5, §7) and sends its data in 64 KiB
   * records as Bacula does; returns the backend's answers.
   */
  async restoreFile(
    fname: string,
    data: Uint8Array,
  ): Promise<{ accept: string; result?: string; errors: string[] }> {
    const before = this.messages.length;
    const errors = () =>
      this.messages.slice(before).filter((m) => m.kind === "Q").map((m) => m.text);
    await this.command(`FNAME:${fname}`);
    await this.command(`STAT:F ${data.length} 0 0 100640 1 0`);
    await this.command("TSTAMP:1700000000 1700000000 1700000000");
    await this.send("F");
    const accept = await this.answer("OK/SKIP for the file");
    if (accept !== "OK" || data.length === 0) return { accept, errors: errors() };
    await this.command("DATA");
    for (let at = 0; at < data.length; at += 65536) {
      await this.send("D", data.subarray(at, Math.min(at + 65536, data.length)));
    }
    await this.send("F");
    const result = await this.answer("OK after the data");
    return { accept, result, errors: errors() };
  }

  /** A C answer, or `E:<text>` / `A:<text>` when the backend sent an error instead. */
  async answer(what: string): Promise<string> {
    const p = await this.next(what);
    if (!p) return "EOF";
    if (p.kind === "E" || p.kind === "A") return `${p.kind}:${packetText(p)}`;
    if (p.kind !== "C") throw new EmulatorError(`expected C for ${what}, got ${p.kind}`);
    return packetText(p);
  }

  /** Waits for the process to exit (with the timeout) and returns its code and stderr. */
  async exit(): Promise<{ code: number; stderr: string }> {
    const status = await this.#timeout(this.process.status, "process exit");
    return { code: status.code, stderr: await this.#stderr };
  }

  /** Kills the process if still running and releases the pipes. */
  async dispose(): Promise<void> {
    try {
      this.process.kill("SIGKILL");
    } catch {
      // already exited
    }
    await this.closeInput();
    await this.process.status;
    await this.#stderr.catch(() => "");
  }

  /** Messages of the given kinds, as text. */
  said(...kinds: PacketKind[]): string[] {
    return this.messages.filter((m) => kinds.includes(m.kind)).map((m) => m.text);
  }
}
