/**
 * A target host for cross-restore tests: the loopback sshd fixture, with
 * stand-ins for the hypervisor tools that do not exist here (`qm`, `vim-cmd`,
 * `pwsh`, `pvesm`). They are shell scripts in a private bin dir that log their
 * arguments; the sshd fixture's authorized key gets a forced command that
 * puts that dir first on PATH and then runs the requested command, so the
 * real code path (remote command over SSH) is what the tests observe.
 *
 * SIMULATED: LVM-thin / ZFS volumes. The fake `pvesm alloc` creates a sparse
 * regular file under `volumeDir/STORAGE/` standing for the block device,
 * its size rounded up to 4 MiB as LVM extents are; `pvesm path` names that
 * file and `pvesm free` removes it.
 *
 * @module
 */
import { startSshd, type TestSshd } from "../fixtures/sshd.ts";

/** The sshd plus the fake tools' log. */
export interface FakeHost {
  sshd: TestSshd;
  /** Where the fake `pvesm` keeps its volume stand-ins (`STORAGE/NAME`). */
  volumeDir: string;
  /** Every fake tool invocation, one `tool args...` line each. */
  calls(): Promise<string[]>;
  /** `ssh://root@127.0.0.1:PORT` + `path`. */
  url(path: string): string;
  /** `--dest URL --ssh-key KEY --known-hosts FILE` for `path` on this host. */
  destArgs(path: string): string[];
  stop(): Promise<void>;
}

const TOOLS: Record<string, string> = {
  qm: `case "$1" in config) echo "name: restored"; echo "memory: 2048";; esac`,
  "vim-cmd": `echo 42`,
  pwsh: `echo "created VM"`,
  pvesm: `vol() { echo "$VOLUMES/\${1%%:*}/\${1#*:}"; }
case "$1" in
alloc)
  f="$VOLUMES/$2/$4"
  if [ -e "$f" ]; then echo "volume '$2:$4' already exists" >&2; exit 1; fi
  mkdir -p "$VOLUMES/$2" && truncate -s "$(( ($5 + 4095) / 4096 * 4 ))M" "$f" || exit 1
  echo "successfully created '$2:$4'";;
path) vol "$2";;
free) rm "$(vol "$2")" || exit 1;;
*) echo "400 unknown command 'pvesm $1'" >&2; exit 255;;
esac`,
};

/**
 * A `dd` that passes its input on at 1 MiB per 50 ms to the real one, so a
 * test can kill the writer mid-disk however loaded the machine is.
 */
const SLOW_DD = `t=$(mktemp)
{ while /bin/dd bs=1M count=1 iflag=fullblock status=none of="$t" && [ -s "$t" ]; do
  cat "$t"; sleep 0.05
done; } | /bin/dd "$@"
rc=$?; rm -f "$t"; exit $rc`;

/** Starts sshd with the fake tools on its sessions' PATH (and a slowed `dd` if `slowDd`). */
export async function startFakeHost(options: { slowDd?: boolean } = {}): Promise<FakeHost> {
  const sshd = await startSshd();
  const bin = `${sshd.dir}/fakebin`;
  const log = `${sshd.dir}/calls.log`;
  const volumeDir = `${sshd.dir}/volumes`;
  await Deno.mkdir(bin);
  const tools = options.slowDd ? { ...TOOLS, dd: SLOW_DD } : TOOLS;
  for (const [name, body] of Object.entries(tools)) {
    await Deno.writeTextFile(
      `${bin}/${name}`,
      `#!/bin/sh\nVOLUMES=${volumeDir}\necho "${name} $*" >> ${log}\n${body}\n`,
      {
        mode: 0o755,
      },
    );
  }
  const key = (await Deno.readTextFile(`${sshd.dir}/authorized_keys`)).trim();
  const forced = `command="PATH=${bin}:$PATH; export PATH; exec sh -c \\"$SSH_ORIGINAL_COMMAND\\""`;
  await Deno.writeTextFile(`${sshd.dir}/authorized_keys`, `${forced} ${key}\n`);
  const url = (path: string) => `ssh://root@127.0.0.1:${sshd.port}${path}`;
  return {
    sshd,
    volumeDir,
    calls: async () => {
      try {
        return (await Deno.readTextFile(log)).trim().split("\n").filter(Boolean);
      } catch {
        return [];
      }
    },
    url,
    destArgs: (path) => [
      "--dest",
      url(path),
      "--ssh-key",
      sshd.keyPath,
      "--known-hosts",
      sshd.knownHostsPath,
    ],
    stop: () => sshd.stop(),
  };
}
