/**
 * A VM's own disk as a random-access target: the block node of a running
 * QEMU (or qemu-storage-daemon) exported writable over QEMU's NBD server
 * through QMP and written through the NBD client.
 *
 * @module
 */
import { join } from "node:path";
import { tmpdir } from "node:os";
import { TargetError } from "../core/errors.ts";
import { NbdClient } from "../nbd/client.ts";
import { QmpError, type QmpTransport } from "../qemu/qmp.ts";
import { deleteExport, queryBlockNode } from "../qemu/blocknodes.ts";
import { type NbdServer, startNbdServer } from "../qemu/nbd_server.ts";
import type { RunRecord } from "../core/run_record.ts";
import { newTempPrefix } from "../qemu/checkpoint.ts";
import type { RestoreTarget } from "./target.ts";

/**
 * Exports `node` writable over QEMU's own NBD server and connects to it. The
 * export id marks it as a dirtybit leftover (removed by the next backup or
 * restore) if this process dies, and `run` records the server and scratch
 * directory this starts; `close` removes the export and what it started.
 */
export async function openVmDiskTarget(
  qmp: QmpTransport,
  node: string,
  nbdSocket: string | undefined,
  run: RunRecord,
): Promise<RestoreTarget> {
  await queryBlockNode(qmp, node);
  const dir = nbdSocket
    ? null
    : join(tmpdir(), `dirtybit-restore-${crypto.randomUUID().slice(0, 8)}`);
  const socket = nbdSocket ?? join(dir!, "nbd.sock");
  let server: NbdServer | undefined;
  const id = `${newTempPrefix()}r`;
  let exported = false;
  const release = async () => {
    if (exported) await deleteExport(qmp, id);
    await server?.stop();
    if (dir) await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    if (dir) {
      await run.add({ kind: "path", path: dir });
      await Deno.mkdir(dir, { mode: 0o700 });
    }
    server = await startNbdServer(qmp, {
      addr: { type: "unix", path: socket },
      given: nbdSocket !== undefined,
      run,
      busy: "QEMU already runs an NBD server: pass its unix socket as nbd_socket to use it",
    });
    try {
      await qmp.execute("block-export-add", {
        type: "nbd",
        id,
        "node-name": node,
        name: id,
        writable: true,
      });
    } catch (err) {
      if (err instanceof QmpError && /permission|conflict|unshared/i.test(err.desc)) {
        throw new TargetError(
          `disk ${node} is attached to a running guest device, so QEMU refuses to write it: stop the VM and detach the disk (device_del), or restore into a file with where=DIR`,
          { cause: err },
        );
      }
      throw err;
    }
    exported = true;
    const client = await NbdClient.connect({ uri: `nbd+unix:///${id}?socket=${socket}` });
    let closed = false;
    return {
      size: client.size,
      writeData: (offset, data) => client.pwrite(data, offset),
      writeZero: (offset, length) => client.zero(offset, length),
      flush: () => client.flush(),
      close: async () => {
        if (closed) return;
        closed = true;
        await client.close();
        await release();
      },
    };
  } catch (err) {
    await release().catch(() => {});
    throw err;
  }
}
