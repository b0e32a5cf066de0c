/**
 * QEMU's NBD server as dirtybit starts it, recognisable after a crash.
 *
 * Before `nbd-server-start` the run records the server in its state
 * directory ({@link RunRecord}) and tags QEMU with a marker object (a
 * `secret` named `dirtybit-nbd-...`): the marker lives exactly as long as that
 * QEMU process. So a server whose run died (kill -9) is known to be
 * dirtybit's own when a dead run's record names this QEMU and QEMU still holds
 * the record's marker; the next run stops it (once the caller has removed the
 * dead run's exports) and starts its own. A server someone else started has
 * no such record and is refused as before ("pass its socket").
 *
 * @module
 */
import { SourceError } from "../core/errors.ts";
import type { RunItem, RunRecord } from "../core/run_record.ts";
import { queryExportIds } from "./blocknodes.ts";
import { QmpError, type QmpTransport } from "./qmp.ts";

/** Where the server listens (QMP `SocketAddress`). */
export type NbdServerAddress =
  | { type: "unix"; path: string }
  | { type: "inet"; host: string; port: string };

/** Request of {@link startNbdServer}. */
export interface NbdServerRequest {
  addr: NbdServerAddress;
  /**
   * The operator named a server QEMU already runs at `addr`: finding one
   * running is fine (it is used, and left running).
   */
  given?: boolean;
  /** The run's record; without it nothing is recorded nor recovered. */
  run?: RunRecord;
  /** Error text when QEMU runs another's server and none was given. */
  busy: string;
}

/** A server dirtybit uses; `started` if it started it. */
export interface NbdServer {
  readonly started: boolean;
  /** Stops the server if this run started it and it exports nothing any more. */
  stop(): Promise<void>;
}

const MARKER_PREFIX = "dirtybit-nbd-";

/**
 * Stops what dead runs of `run`'s state directory left of their NBD servers
 * on this QEMU, then starts the server (see the module doc).
 */
export async function startNbdServer(
  qmp: QmpTransport,
  req: NbdServerRequest,
): Promise<NbdServer> {
  if (req.run) await stopLeftoverServers(qmp, req.run);
  const item: RunItem = {
    kind: "nbd-server",
    qmp: qmp.name,
    marker: `${MARKER_PREFIX}${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`,
  };
  await req.run?.add(item);
  await qmp.execute("object-add", { "qom-type": "secret", id: item.marker, data: "dirtybit" });
  const forget = async () => {
    await qmp.execute("object-del", { id: item.marker }).catch(() => {});
    await req.run?.drop(item);
  };
  try {
    const { type, ...data } = req.addr;
    await qmp.execute("nbd-server-start", { addr: { type, data } });
  } catch (err) {
    await forget();
    if (!(err instanceof QmpError && /already running/i.test(err.desc))) throw err;
    if (!req.given) throw new SourceError(req.busy);
    return { started: false, stop: () => Promise.resolve() };
  }
  return {
    started: true,
    stop: async () => {
      if ((await queryExportIds(qmp)).length > 0) return; // someone else's exports: keep serving
      await qmp.execute("nbd-server-stop");
      await forget();
    },
  };
}

async function stopLeftoverServers(qmp: QmpTransport, run: RunRecord): Promise<void> {
  const left = run.leftovers("nbd-server").filter((item) => item.qmp === qmp.name);
  if (left.length === 0) return;
  const objects = await qmp.execute<{ name: string }[]>("qom-list", { path: "/objects" })
    .catch((err) => {
      // qemu-storage-daemon makes /objects with its first object: a run killed
      // before adding its marker leaves none, so no marker and no server of ours.
      if (err instanceof QmpError && err.qmpClass === "DeviceNotFound") return [];
      throw err;
    });
  const markers = new Set(objects.map((o) => o.name));
  for (const item of left) {
    // No marker: QEMU restarted (the server died with it) or it was stopped already.
    if (markers.has(item.marker)) {
      const exports = await queryExportIds(qmp);
      if (exports.length > 0) {
        throw new SourceError(
          `QEMU runs the NBD server of a dirtybit run that was killed, but it still exports ` +
            `${exports.join(", ")}: remove those exports (QMP block-export-del) and retry`,
        );
      }
      try {
        await qmp.execute("nbd-server-stop");
      } catch (err) {
        if (!(err instanceof QmpError && /not running/i.test(err.desc))) throw err;
      }
      await qmp.execute("object-del", { id: item.marker });
    }
    await run.settle(item);
  }
}
