/**
 * `dirtybit restore --live`: a chain restored into a running VM's disk
 * while the guest uses it (lib/restore/live.ts).
 *
 * @module
 */
import { parseFlags, required } from "./args.ts";
import { catchStopSignals } from "./stop_signals.ts";
import { UsageError } from "../core/errors.ts";
import { liveRestore } from "../restore/live.ts";
import { Progress, PROGRESS_FLAGS, PROGRESS_HELP } from "./progress.ts";
import { timing } from "./progress_view.ts";
import { parseSize } from "./convert.ts";

const HELP = `
usage: dirtybit restore --live --qmp SOCKET --node NODE [--rate N] [--json] STREAM...

Restores a full and its incrementals (or a differential) into the qcow2 disk
node NODE of a running QEMU while its guest already runs on it: the chain is
served over NBD and attached as NODE's backing, so the guest reads blocks not
restored yet from the backup; a QEMU block-stream job copies everything into
NODE's image, then the backing and the export are removed. NODE's image must
be a new, empty qcow2 image of the disk's size (qemu-img create -f qcow2
IMAGE SIZE); guest writes meanwhile land in it and are kept.

If the restore is interrupted (Ctrl-C, SIGTERM, a crash), IMAGE.dbit.json marks
the image incomplete and the guest's reads of blocks not copied yet fail: run
the same command again to resume (what was copied stays).

  --qmp SOCKET    QMP unix socket of the QEMU running the target (required)
  --node NODE     the target's qcow2 format node (required)
  --rate N        copy at most N bytes per second (e.g. 50M; default: no limit)
  --json          print a JSON summary on stdout${PROGRESS_HELP}
`;

/** Runs `restore --live ARGS`. */
export async function runLiveRestore(args: string[]): Promise<number> {
  const parsed = parseFlags(
    "restore",
    args,
    {
      live: { type: "boolean" },
      qmp: { type: "string", path: true },
      node: { type: "string" },
      rate: { type: "string" },
      json: { type: "boolean" },
      ...PROGRESS_FLAGS,
    },
    HELP,
  );
  if (!parsed) return 0;
  const { values, positionals } = parsed;
  const qmp = required("restore", "qmp", values.qmp);
  const node = required("restore", "node", values.node);
  if (positionals.length === 0 || positionals.includes("-")) {
    throw new UsageError("restore --live: name the STREAM files (a full first; not -)");
  }
  const rate = values.rate ? parseSize("rate", values.rate, "restore") : undefined;
  const stop = catchStopSignals();
  const progress = await Progress.start("restore", values);
  let result;
  try {
    result = await liveRestore({
      qmp,
      node,
      streams: positionals,
      rate,
      signal: stop.signal,
      onProgress: (done, total) => progress.update(node, done, total),
      onInfo: (text) => progress.info(text),
      onWarning: (text) => progress.warn(text),
    });
  } catch (err) {
    progress.fail(err);
    throw err;
  } finally {
    stop.close();
  }
  const when = timing(progress.startedAt, Date.now(), result.bytes);
  progress.finish({
    what: `live restore to ${node}`,
    level: result.levels.join("+"),
    read: result.bytes,
    seconds: when.seconds,
  });
  if (values.json) console.log(JSON.stringify({ ...result, ...when }, null, 2));
  return 0;
}
