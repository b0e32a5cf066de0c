/**
 * `dirtybit mount` and `dirtybit umount`: file-level restore from a backup
 * chain (lib/mount does the work; this file words it).
 *
 * @module
 */
import type { Command } from "./command.ts";
import { catchStopSignals } from "./stop_signals.ts";
import { parseFlags } from "./args.ts";
import { InputError, UsageError } from "../core/errors.ts";
import { mountChain, unmountDir } from "../mount/mount.ts";

const MOUNT_HELP = `
usage: dirtybit mount [--json] STREAM... DIR

Mounts the disk as it was at the last STREAM (a full and its incrementals, or
a full and a differential) read-only under DIR, without restoring it: the
chain is served over NBD, exposed as a file with nbdfuse, attached to a loop
device with its partitions, and each file system found is mounted read-only
at DIR/p1, DIR/p2, ... (DIR/disk for a disk without a partition table).
Partitions without a readable file system (swap, LVM, encrypted) are reported
and skipped. Needs root, /dev/fuse and loop devices.

mount stays in the foreground; 'dirtybit umount DIR', Ctrl-C or SIGTERM
unmounts everything. After a crash, the next mount or umount of DIR removes
what is left.

  --json    print what was mounted as JSON on stdout once mounted
`;

const UMOUNT_HELP = `
usage: dirtybit umount DIR

Undoes 'dirtybit mount ... DIR': stops that mount process (it unmounts the file
systems, detaches the loop device and the FUSE file, stops the server) and
waits for it; if it was killed, removes what it left.
`;

export const mountCommand: Command = {
  name: "mount",
  summary: "mount a backup's file systems read-only (file-level restore)",
  async run(args) {
    const parsed = parseFlags(
      "mount",
      args,
      { json: { type: "boolean" } },
      MOUNT_HELP,
    );
    if (!parsed) return 0;
    const { positionals } = parsed;
    if (positionals.length < 2) {
      throw new UsageError("mount: name the STREAMs (a full first) and then the DIR to mount on");
    }
    const dir = positionals.at(-1)!;
    const streams = positionals.slice(0, -1);
    // Signals before mounting: a SIGTERM while it is being set up still undoes it.
    const stop = catchStopSignals();
    try {
      // A read the server refuses (a damaged record) fails in the file system: say which.
      const mounted = await mountChain(streams, dir, (kind, text) => {
        if (kind !== "info") console.error(`dirtybit: ${kind}: ${text}`);
      });
      if (mounted.cleanedAfter) {
        console.error(
          `dirtybit: removed what a killed mount (pid ${mounted.cleanedAfter}) left in ${mounted.dir}`,
        );
      }
      for (const p of mounted.parts) {
        console.error(
          p.path
            ? `dirtybit: mounted ${p.name} (${p.fstype}) read-only at ${p.path}`
            : `dirtybit: ${p.name}: skipped: ${p.skipped}`,
        );
      }
      if (!mounted.parts.some((p) => p.path)) {
        await mounted.close();
        throw new InputError(
          `mount: no file system of the disk could be mounted (${
            mounted.parts.map((p) => `${p.name}: ${p.skipped}`).join("; ")
          })`,
        );
      }
      if (parsed.values.json) {
        console.log(JSON.stringify({ dir: mounted.dir, parts: mounted.parts }, null, 2));
      }
      console.error(
        `dirtybit: ${mounted.dir} is mounted; 'dirtybit umount ${mounted.dir}' or Ctrl-C unmounts it`,
      );
      await stop.stopped;
      await mounted.close();
      console.error(`dirtybit: ${mounted.dir} unmounted`);
      return 0;
    } finally {
      stop.close();
    }
  },
};

export const umountCommand: Command = {
  name: "umount",
  summary: "undo a dirtybit mount",
  async run(args) {
    const parsed = parseFlags("umount", args, {}, UMOUNT_HELP);
    if (!parsed) return 0;
    if (parsed.positionals.length !== 1) throw new UsageError("umount: name one DIR");
    await unmountDir(parsed.positionals[0]);
    return 0;
  },
};
