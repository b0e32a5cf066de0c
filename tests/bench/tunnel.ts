/**
 * SSH to a KVM host: which client for which job (lib/hosts/ssh.ts).
 *
 * Against the loopback test sshd, one run measures:
 * - NBD read (`nbdcopy URI null:`) of a raw export served by qemu-nbd on the
 *   "host", through dirtybit's tunnel (OpenSSH `ssh -N -L`, AES-GCM), through
 *   npm `ssh2` (a local unix socket piped into `openssh_forwardOutStreamLocal`
 *   channels, as a Deno program would do it), and through a plain `ssh -L`
 *   with OpenSSH's defaults;
 * - the raw SSH byte stream of the same data (`ssh host cat IMAGE`);
 * - control round trips: a remote `true` through dirtybit's multiplexed
 *   OpenSSH connection vs an `exec` on one ssh2 connection.
 *
 * `ratio` = referenceSeconds / dirtybitSeconds (above 1: dirtybit is faster);
 * `bar` is the lowest acceptable ratio.
 *
 * Run alone: `deno run -A tests/bench/tunnel.ts`.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import net from "node:net";
import type { Duplex, Readable } from "node:stream";
// The only user of ssh2, the reference client measured here: imported here, not from deno.json.
import { Client } from "npm:ssh2@^1.16.0";
import { SshHost } from "../../lib/hosts/ssh.ts";
import { plainForward, plainSshArgs, startSshd, type TestSshd } from "../fixtures/sshd.ts";
import { withQemuNbd } from "../fixtures/qemu_nbd.ts";
import { atLeast, type BenchRow } from "./table.ts";
import { seconds } from "./measure.ts";

const SIZE = 128 << 20;
const ROUNDS = 3;
const CONTROL_CALLS = 20;

/** Best of `ROUNDS` runs: the least disturbed by other work on the machine. */
async function best(fn: () => Promise<void>): Promise<number> {
  let min = Infinity;
  for (let i = 0; i < ROUNDS; i++) min = Math.min(min, await seconds(fn));
  return min;
}

async function nbdcopy(uri: string): Promise<void> {
  const out = await new Deno.Command("nbdcopy", {
    args: [uri, "null:"],
    stdout: "null",
    stderr: "piped",
  })
    .output();
  if (!out.success) {
    throw new Error(`nbdcopy ${uri} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** Host key check for ssh2 against the fixture's known_hosts (ssh2 leaves this to the caller). */
async function ssh2Connect(sshd: TestSshd): Promise<Client> {
  const known = (await Deno.readTextFile(sshd.knownHostsPath)).trim().split(" ")[2];
  const client = new Client();
  await new Promise<void>((resolve, reject) => {
    client.on("ready", () => resolve()).on("error", reject).connect({
      host: sshd.host,
      port: sshd.port,
      username: sshd.user,
      privateKey: Buffer.from(Deno.readFileSync(sshd.keyPath)),
      hostVerifier: (key: Buffer) => key.toString("base64") === known,
    });
  });
  return client;
}

/** A local unix socket whose connections ssh2 forwards to `remoteSocket` on the host. */
async function ssh2Forward(client: Client, local: string, remoteSocket: string) {
  const server = net.createServer((sock) => {
    client.openssh_forwardOutStreamLocal(remoteSocket, (err: Error | undefined, stream: Duplex) => {
      if (err) {
        sock.destroy();
        return;
      }
      sock.pipe(stream).pipe(sock);
      sock.on("error", () => stream.destroy());
      stream.on("error", () => sock.destroy());
    });
  });
  await new Promise<void>((resolve) => server.listen(local, resolve));
  return () => new Promise<void>((resolve) => server.close(() => resolve()));
}

function ssh2Exec(client: Client, command: string): Promise<void> {
  return new Promise((resolve, reject) => {
    client.exec(command, (err: Error | undefined, stream: Duplex & { stderr: Readable }) => {
      if (err) return reject(err);
      stream.on("close", () => resolve()).on("data", () => {}).stderr.on("data", () => {});
    });
  });
}

function row(
  name: string,
  dirtybitSeconds: number,
  referenceSeconds: number,
  bar: number,
): BenchRow {
  const shown = (x: number) => `${x.toFixed(3)} s`;
  return atLeast(
    name,
    shown(dirtybitSeconds),
    shown(referenceSeconds),
    referenceSeconds / dirtybitSeconds,
    bar,
  );
}

/** Runs the SSH benchmarks (see the module doc). */
export async function benchTunnel(): Promise<BenchRow[]> {
  const sshd = await startSshd();
  try {
    return await withQemuNbd(
      { size: SIZE, format: "raw", writes: [{ offset: 0, length: SIZE, pattern: 0x5a }] },
      async (srv) => {
        const socket = srv.socketPath!;
        const host = await SshHost.connect({
          host: sshd.host,
          port: sshd.port,
          keyPath: sshd.keyPath,
          knownHostsPath: sshd.knownHostsPath,
        });
        const client = await ssh2Connect(sshd);
        try {
          const tunnel = await host.openTunnel({ socket });
          const ours = await best(() => nbdcopy(tunnel.nbdUri("disk0")));
          tunnel.check();
          await tunnel.close();

          const ssh2Local = `${sshd.dir}/ssh2.sock`;
          const stopForward = await ssh2Forward(client, ssh2Local, socket);
          const viaSsh2 = await best(() => nbdcopy(`nbd+unix:///disk0?socket=${ssh2Local}`));
          await stopForward();

          const plainLocal = `${sshd.dir}/plain.sock`;
          const plain = await plainForward(sshd, plainLocal, socket);
          let viaPlain: number;
          try {
            viaPlain = await best(() => nbdcopy(`nbd+unix:///disk0?socket=${plainLocal}`));
          } finally {
            plain.kill("SIGTERM");
            await plain.status;
          }

          const rawStream = await best(async () => {
            const r = await host.run(["sh", "-c", `cat ${srv.imagePath} >/dev/null`]);
            if (r.code !== 0) throw new Error(r.stderr);
          });
          const catThrough = await best(async () => {
            const out = await new Deno.Command("ssh", {
              args: plainSshArgs(sshd, "cat", srv.imagePath),
              stdout: "null",
              stderr: "null",
            }).output();
            if (!out.success) throw new Error("ssh cat failed");
          });

          const mux = await seconds(async () => {
            for (let i = 0; i < CONTROL_CALLS; i++) await host.run(["true"]);
          });
          const ssh2Calls = await seconds(async () => {
            for (let i = 0; i < CONTROL_CALLS; i++) await ssh2Exec(client, "true");
          });

          const mb = SIZE / 1e6;
          const note = (s: number) => `${Math.round(mb / s)} MB/s`;
          console.error(
            `tunnel ${note(ours)}, ssh2 ${note(viaSsh2)}, plain ssh -L ${note(viaPlain)}, ` +
              `ssh cat ${note(catThrough)} (remote cat alone ${
                note(rawStream)
              }); control per call: ` +
              `mux ${(mux / CONTROL_CALLS * 1000).toFixed(0)} ms, ssh2 ${
                (ssh2Calls / CONTROL_CALLS * 1000).toFixed(0)
              } ms`,
          );
          return [
            row(
              `tunnel: nbdcopy ${SIZE >> 20} MiB, OpenSSH tunnel vs npm ssh2`,
              ours,
              viaSsh2,
              1.0,
            ),
            row(
              "tunnel: dirtybit tunnel (AES-GCM) vs plain ssh -L (defaults)",
              ours,
              viaPlain,
              0.9,
            ),
            row("tunnel: NBD through tunnel vs raw `ssh host cat` stream", ours, catThrough, 0.8),
            row(
              `control: ${CONTROL_CALLS} remote commands, OpenSSH mux vs ssh2 exec`,
              mux,
              ssh2Calls,
              0.3,
            ),
          ];
        } finally {
          client.end();
          await host.close();
        }
      },
    );
  } finally {
    await sshd.stop();
  }
}

if (import.meta.main) {
  const { renderTable } = await import("./table.ts");
  console.log(renderTable(await benchTunnel()));
}
