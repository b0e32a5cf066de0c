/**
 * The `replicate status` use case: the status rows of a sender's state
 * directory (with each disk's role there), or of a receiver, asked over the
 * secure channel. The rows' formats are in status.ts.
 *
 * @module
 */
import { SecureChannel } from "./channel.ts";
import { loadRole } from "./role_file.ts";
import { listSenderStates } from "./sender_state.ts";
import { type DiskStatus, receiverStatus, senderStatus } from "./status.ts";

/** Where the status comes from. */
export type StatusRequest =
  | { stateDir: string }
  | { host: string; port: number; psk: string };

/** The status rows the request names. */
export async function replicationStatus(req: StatusRequest): Promise<DiskStatus[]> {
  if ("host" in req) {
    const channel = await SecureChannel.connect(req.host, req.port, { psk: req.psk });
    try {
      await channel.send({ type: "status-request" });
      const rows = receiverStatus((await channel.expect("status")).replicas, new Date());
      await channel.send({ type: "close" });
      return rows;
    } finally {
      channel.close();
    }
  }
  const states = await listSenderStates(req.stateDir);
  const roles = new Map<string, string>();
  for (const s of states) {
    const r = await loadRole(req.stateDir, s.name, "primary");
    roles.set(s.name, `${r.role}/${r.state}`);
  }
  return senderStatus(states, new Date(), roles);
}
