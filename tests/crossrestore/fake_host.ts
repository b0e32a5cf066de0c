/**
 * A target host for cross-restore tests: the loopback sshd fixture, with
 * stand-ins for the hypervisor tools that do not exist here (`qm`, `vim-cmd`,
 * `pwsh`). They are shell scripts in a private bin dir that log their
 * arguments; the sshd fixture's authorized key gets a forced command that
 * puts that dir first on PATH and then runs the requested command, so the
 * real code path (remote command over SSH) is what the tests observe.
 *
 * @module
 */
import { startSshd, type TestSshd } from "../fixtures/sshd.ts";

/** The sshd plus the fake tools' log. */
export interface FakeHost {
  sshd: TestSshd;
  /** Every fake tool invocation, one `tool args...` line each. */
  calls(): Promise<string[]>;
  /** `ssh://root@127.0.0.1:PORT` + `path`. */
  url(path: string): string;
  stop(): Promise<void>;
}

const TOOLS: Record<string, string> = {
  qm: `case "$1" in config) echo "name: restored"; echo "memory: 2048";; esac`,
  "vim-cmd": `echo 42`,
  pwsh: `echo "created VM"`,
};

/** Starts sshd with the fake tools on its sessions' PATH. */
export async function startFakeHost(): Promise<FakeHost> {
  const sshd = await startSshd();
  const bin = `${sshd.dir}/fakebin`;
  const log = `${sshd.dir}/calls.log`;
  await Deno.mkdir(bin);
  for (const [name, body] of Object.entries(TOOLS)) {
    await Deno.writeTextFile(
      `${bin}/${name}`,
      `#!/bin/sh\necho "${name} $*" >> ${log}\n${body}\n`,
      {
        mode: 0o755,
      },
    );
  }
  const key = (await Deno.readTextFile(`${sshd.dir}/authorized_keys`)).trim();
  const forced = `command="PATH=${bin}:$PATH; export PATH; exec sh -c \\"$SSH_ORIGINAL_COMMAND\\""`;
  await Deno.writeTextFile(`${sshd.dir}/authorized_keys`, `${forced} ${key}\n`);
  return {
    sshd,
    calls: async () => {
      try {
        return (await Deno.readTextFile(log)).trim().split("\n").filter(Boolean);
      } catch {
        return [];
      }
    },
    url: (path) => `ssh://root@127.0.0.1:${sshd.port}${path}`,
    stop: () => sshd.stop(),
  };
}
