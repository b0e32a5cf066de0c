/**
 * `dirtybit replicate receive`: accepts senders over the secure channel and
 * hands their batches to the {@link ReplicaStore}. One connection serves one
 * disk at a time; a batch is confirmed only once it is durable.
 *
 * @module
 */
import { ChainError, describeError, DirtybitError, InputError, wrapError } from "../core/errors.ts";
import { SecureChannel, TransportError } from "./channel.ts";
import type { ReplicaStore } from "./store.ts";

/** Options of {@link Receiver.start}. */
export interface ReceiverOptions {
  hostname: string;
  port: number;
  psk: string;
  store: ReplicaStore;
  /** One line per event (never the key). */
  log: (line: string) => void;
  handshakeTimeoutMs?: number;
}

/** A listening receiver. */
export class Receiver {
  readonly #listener: Deno.TcpListener;
  readonly #options: ReceiverOptions;
  readonly #sessions = new Map<Promise<void>, { close(): void }>();
  readonly #loop: Promise<void>;
  #stopping = false;

  private constructor(listener: Deno.TcpListener, options: ReceiverOptions) {
    this.#listener = listener;
    this.#options = options;
    this.#loop = this.#acceptLoop();
  }

  /** Binds the listening socket and starts accepting. */
  static start(options: ReceiverOptions): Receiver {
    let listener: Deno.TcpListener;
    try {
      listener = Deno.listen({ hostname: options.hostname, port: options.port, transport: "tcp" });
    } catch (err) {
      throw wrapError(
        err,
        TransportError,
        `cannot listen on ${options.hostname}:${options.port}: ${describeError(err)}`,
      );
    }
    return new Receiver(listener, options);
  }

  /** The bound port (useful with port 0). */
  get port(): number {
    return this.#listener.addr.port;
  }

  /**
   * Stops: no new connections, open ones are closed. A batch being applied
   * finishes first; one still arriving is discarded (its sender retries).
   */
  async stop(): Promise<void> {
    if (!this.#stopping) {
      this.#stopping = true;
      try {
        this.#listener.close();
      } catch {
        // already closed
      }
    }
    await this.#loop;
    for (const s of this.#sessions.values()) s.close();
    await Promise.allSettled([...this.#sessions.keys()]);
  }

  async #acceptLoop(): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return; // listener closed
      }
      if (this.#stopping) {
        conn.close();
        return;
      }
      const peer = `${conn.remoteAddr.hostname}:${conn.remoteAddr.port}`;
      const holder = { close: () => conn.close() };
      const session = this.#session(conn, peer, holder)
        .catch((err) => this.#options.log(`${peer}: ${describeError(err)}`))
        .finally(() => this.#sessions.delete(session));
      this.#sessions.set(session, holder);
    }
  }

  async #session(conn: Deno.TcpConn, peer: string, holder: { close(): void }): Promise<void> {
    const { store, log } = this.#options;
    const channel = await SecureChannel.accept(conn, {
      psk: this.#options.psk,
      handshakeTimeoutMs: this.#options.handshakeTimeoutMs,
    });
    holder.close = () => channel.close();
    let claimed: string | undefined;
    try {
      for (;;) {
        let msg;
        try {
          msg = await channel.receive();
        } catch (err) {
          if (err instanceof TransportError) return; // the sender went away between batches
          throw err;
        }
        switch (msg.type) {
          case "open":
            if (claimed) await store.release(claimed);
            claimed = undefined;
            store.claim(msg.name);
            claimed = msg.name;
            await channel.send(await store.describe(msg.name));
            break;
          case "begin": {
            if (!claimed) throw new InputError("replication protocol error: begin before open");
            try {
              const confirm = await store.receiveBatch(claimed, msg, {
                next: () => channel.receive(),
                wireBytes: () => channel.bytesReceived,
              });
              log(
                `${claimed}: ${msg.kind} ${
                  msg.kind === "seed" ? `up to ${confirm.seedOffset ?? msg.size}` : msg.cycle
                } durable`,
              );
              await channel.send(confirm);
            } catch (err) {
              // `replicate status` at this site counts it; the error itself goes on.
              await store.recordError(claimed, err).catch(() => {});
              if (err instanceof ChainError || err instanceof DirtybitError) {
                await channel.send({ type: "error", message: describeError(err) }).catch(() => {});
              }
              throw err;
            }
            break;
          }
          case "hashes-request":
          case "promote":
          case "reprotect":
          case "fenced": {
            if (claimed !== msg.name) {
              throw new InputError(`replication protocol error: ${msg.type} for a disk not opened`);
            }
            try {
              if (msg.type === "hashes-request") {
                for await (const m of store.hashes(msg.name, msg.blockSize)) await channel.send(m);
              } else {
                const role = msg.type === "promote"
                  ? await store.promote(msg)
                  : msg.type === "reprotect"
                  ? await store.reprotect(msg)
                  : await store.sourceFenced(msg);
                log(`${msg.name}: ${msg.type}: now ${role.role}/${role.state}`);
                await channel.send({
                  type: "role-done",
                  name: msg.name,
                  role: `${role.role}/${role.state}`,
                });
              }
            } catch (err) {
              if (err instanceof DirtybitError) {
                await channel.send({ type: "error", message: describeError(err) }).catch(() => {});
              }
              throw err;
            }
            break;
          }
          case "status-request": {
            const replicas = await Promise.all(
              (await store.list()).map((s) => store.describe(s.name)),
            );
            await channel.send({ type: "status", replicas });
            break;
          }
          case "close":
            return;
          default:
            throw new InputError(`replication protocol error: unexpected ${msg.type} from ${peer}`);
        }
      }
    } finally {
      channel.close();
      if (claimed) await store.release(claimed);
    }
  }
}
