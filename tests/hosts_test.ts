/**
 * KVM host access (lib/hosts) against real components: an OpenSSH sshd on
 * loopback as the host, qemu-nbd / nbdkit as NBD servers on it, and a real
 * libvirtd running a TCG domain laid out like a CloudStack VM.
 *
 * SIMULATED: the guest agent. No guest OS runs, and libvirt only talks to an
 * agent once the guest opens its virtio-serial port, so the freeze/thaw tests
 * use a fake agent (tests/fixtures/libvirt.ts) reached by host commands over
 * the real sshd; the thaw guard, timeouts and kill paths are all real.
 */
import {
  deepStrictEqual as assertEquals,
  match as assertMatch,
  ok as assert,
} from "node:assert/strict";
import { CancelledError, SourceError, UsageError } from "../lib/core/errors.ts";
import { shellCommand, SshHost } from "../lib/hosts/ssh.ts";
import {
  GuestAgentUnavailableError,
  libvirtGuestAgent,
  ThawGuard,
  withFrozenGuest,
} from "../lib/hosts/guest_agent.ts";
import { startSshd, type TestSshd } from "./fixtures/sshd.ts";
import { startCloudStackVm, startFakeGuestAgent } from "./fixtures/libvirt.ts";
import { withQemuNbd } from "./fixtures/qemu_nbd.ts";
import { delay } from "../lib/core/async.ts";
import { waitFor } from "./fixtures/kills.ts";
import { assertRejects } from "./helpers.ts";

function connect(sshd: TestSshd, extra: Partial<Parameters<typeof SshHost.connect>[0]> = {}) {
  return SshHost.connect({
    host: sshd.host,
    port: sshd.port,
    user: sshd.user,
    keyPath: sshd.keyPath,
    knownHostsPath: sshd.knownHostsPath,
    ...extra,
  });
}

async function withHost(fn: (host: SshHost, sshd: TestSshd) => Promise<void>) {
  const sshd = await startSshd();
  try {
    const host = await connect(sshd);
    try {
      await fn(host, sshd);
    } finally {
      await host.close();
    }
  } finally {
    await sshd.stop();
  }
}

async function sh(
  cmd: string,
  args: string[],
): Promise<{ code: number; stderr: string; stdout: Uint8Array }> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr), stdout: out.stdout };
}

/**
 * Number of thaw guard processes on the host whose command line contains
 * `needle` (the regex does not match the command line of this probe itself).
 */
async function guardProcesses(host: SshHost, needle: string): Promise<number> {
  const script = `for f in $(grep -l 'dirtybit-thaw-guard-[0-9a-f]' /proc/[0-9]*/cmdline ` +
    `2>/dev/null); do grep -qF "$1" "$f" 2>/dev/null && echo "$f"; done | wc -l`;
  return Number((await host.runChecked(["sh", "-c", script, "sh", needle])).trim());
}

Deno.test("remote commands over the loopback sshd: argv, output, exit code, timeout", async () => {
  await withHost(async (host) => {
    const r = await host.run([
      "sh",
      "-c",
      'printf "%s|" "$@"; echo oops >&2; exit 7',
      "sh",
      "a b",
      "it's",
      "$HOME",
    ]);
    assertEquals(r, { code: 7, stdout: "a b|it's|$HOME|", stderr: "oops\n" });
    assertEquals(await host.runChecked(["echo", "ok"]), "ok\n");
    await assertRejects(
      () => host.runChecked(["false"]),
      SourceError,
      "false on 127.0.0.1 failed (exit 1)",
    );
    await assertRejects(
      () => host.run(["sleep", "30"], { timeoutMs: 500 }),
      SourceError,
      "timed out after 500 ms",
    );
    const stdin = await host.run(["wc", "-c"], { stdin: new Uint8Array(1000) });
    assertEquals(stdin.stdout.trim(), "1000");
  });
});

Deno.test("spawnScript streams stdin into a remote command over the master connection", async () => {
  await withHost(async (host, sshd) => {
    const data = new Uint8Array(4 << 20).map((_, i) => (i * 2654435761) >>> 24);
    const sum = await host.spawnScript(shellCommand(["sha256sum"]));
    const writer = sum.stdin.getWriter();
    for (let at = 0; at < data.length; at += 256 << 10) {
      await writer.write(data.subarray(at, at + (256 << 10)));
    }
    await writer.close();
    const expected = Array.from(
      new Uint8Array(await crypto.subtle.digest("SHA-256", data)),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
    assertEquals((await sum.status).stdout.split(" ")[0], expected);
    assertEquals((await sum.status).code, 0);

    // A receiver that stops reading fails the writes; its own status and message stay readable.
    const bad = host.spawnScript("head -c 10 >/dev/null; echo 'disk full' >&2; exit 3");
    const w = bad.stdin.getWriter();
    await assertRejects(async () => {
      for (let i = 0; i < 1000; i++) await w.write(new Uint8Array(256 << 10));
    }, Error);
    assertEquals(await bad.status, { code: 3, stdout: "", stderr: "disk full\n" });

    // kill() ends the local client; the remote command sees end of input and exits.
    const file = `${sshd.dir}/spawned.bin`;
    const cat = host.spawnScript(`cat > ${shellCommand([file])}`);
    await cat.stdin.getWriter().write(new Uint8Array(1000));
    await waitFor("the remote cat to write", 5000, async () => {
      return (await Deno.stat(file).catch(() => ({ size: 0 }))).size === 1000;
    });
    assertEquals((await sh("fuser", [file])).code, 0, "the remote cat holds the file");
    cat.kill();
    assert((await cat.status).code !== 0);
    // The "host" is this machine: no process may hold the file open any more.
    await waitFor(
      "the remote cat to exit",
      5000,
      async () => (await sh("fuser", [file])).code === 1,
    );
  });
});

Deno.test("host key mismatch, unknown host, refused key and unreachable host are clear errors", async () => {
  const sshd = await startSshd();
  try {
    await assertRejects(
      () => connect(sshd, { knownHostsPath: sshd.wrongKnownHostsPath }),
      SourceError,
      `host key of 127.0.0.1:${sshd.port} does not match known_hosts: ${sshd.wrongKnownHostsPath}`,
    );
    const empty = `${sshd.dir}/empty_known_hosts`;
    await Deno.writeTextFile(empty, "");
    await assertRejects(
      () => connect(sshd, { knownHostsPath: empty }),
      SourceError,
      "is not in known_hosts",
    );
    await assertRejects(
      () => connect(sshd, { keyPath: `${sshd.dir}/other_ed25519` }),
      SourceError,
      "SSH key authentication as root@127.0.0.1",
    );
    await assertRejects(() => connect(sshd, { port: 0 }), UsageError, "ssh_port");
    const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const closedPort = (closed.addr as Deno.NetAddr).port;
    closed.close();
    await assertRejects(
      () => connect(sshd, { port: closedPort }),
      SourceError,
      `cannot reach SSH on 127.0.0.1:${closedPort}`,
    );
    const warnings: string[] = [];
    const unchecked = await connect(sshd, {
      knownHostsPath: sshd.wrongKnownHostsPath,
      verifyHostKey: false,
      warn: (m) => warnings.push(m),
    });
    await unchecked.close();
    assertEquals(warnings.length, 1);
    assertMatch(warnings[0], /NOT verified/);
    for (const w of warnings) assert(!w.includes("PRIVATE"));
  } finally {
    await sshd.stop();
  }
});

Deno.test("NBD through a tunnel to a remote unix socket and to a remote TCP port reads the image", async () => {
  await withHost(async (host) => {
    for (const tcp of [false, true]) {
      await withQemuNbd({
        size: 8 << 20,
        writes: [{ offset: 1 << 20, length: 1 << 20, pattern: 0x5a }],
        tcp,
      }, async (srv) => {
        const endpoint = tcp
          ? { host: "127.0.0.1", port: Number(new URL(srv.uri).port) }
          : { socket: srv.socketPath! };
        const tunnel = await host.openTunnel(endpoint);
        try {
          const viaTunnel = `${srv.dir}/via-tunnel.raw`;
          const copy = await sh("nbdcopy", [tunnel.nbdUri("disk0"), viaTunnel]);
          assertEquals(copy.code, 0, copy.stderr);
          tunnel.check();
          const cmp = await sh("qemu-img", [
            "compare",
            "-U",
            "-f",
            "raw",
            "-F",
            "qcow2",
            viaTunnel,
            srv.imagePath,
          ]);
          assertEquals(cmp.code, 0, new TextDecoder().decode(cmp.stdout));
          const info = await sh("nbdinfo", ["--size", tunnel.nbdUri("disk0")]);
          assertEquals(new TextDecoder().decode(info.stdout).trim(), String(8 << 20));
        } finally {
          await tunnel.close();
        }
        await assertRejects(() => Promise.resolve().then(() => tunnel.check()), CancelledError);
      });
    }
  });
});

Deno.test("a tunnel dropped mid-read fails the read and check()", async () => {
  await withHost(async (host, sshd) => {
    const sock = `${sshd.dir}/slow.sock`;
    // A slow export (50 ms per request) so the drop surely lands mid-read.
    const nbdkit = new Deno.Command("nbdkit", {
      args: ["-f", "-U", sock, "--filter=delay", "pattern", "size=64M", "rdelay=50ms"],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      await waitFor(
        "nbdkit socket",
        10_000,
        async () => (await Deno.stat(sock).catch(() => null)) !== null,
      );
      const tunnel = await host.openTunnel({ socket: sock });
      const reading = sh("nbdcopy", [
        "--connections=1",
        "--requests=1",
        tunnel.nbdUri(""),
        "null:",
      ]);
      await delay(500);
      Deno.kill(tunnel.pid, "SIGKILL");
      const result = await reading;
      assert(result.code !== 0, "nbdcopy must fail when the tunnel drops");
      await tunnel.ended;
      assert(tunnel.dropped);
      let err: unknown;
      try {
        tunnel.check();
      } catch (e) {
        err = e;
      }
      assert(err instanceof SourceError);
      assertMatch(err.message, /dropped .*the read is incomplete/);
      await tunnel.close();
    } finally {
      nbdkit.kill("SIGTERM");
      await nbdkit.status;
    }
  });
});

Deno.test("libvirt's own guest agent on a domain without a guest OS: refused, nothing frozen, no guard left", async () => {
  const vm = await startCloudStackVm({ name: `h5-hosts-${Deno.pid}` });
  try {
    await withHost(async (host) => {
      await assertRejects(
        () => withFrozenGuest(host, libvirtGuestAgent(vm.name), () => Promise.resolve()),
        GuestAgentUnavailableError,
        "QEMU guest agent is not connected",
      );
      assertEquals(await guardProcesses(host, vm.name), 0);
    });
  } finally {
    await vm.destroy();
  }
});

Deno.test("quiesce with the SIMULATED guest agent: frozen inside, thawed after, guard disarmed", async () => {
  const qga = await startFakeGuestAgent();
  try {
    await withHost(async (host) => {
      let guardsDuring = 0;
      const got = await withFrozenGuest(host, qga.agent, async (count) => {
        assert(qga.frozen);
        guardsDuring = await guardProcesses(host, qga.socketPath);
        return count;
      });
      assertEquals(got, 2);
      assertEquals(guardsDuring, 1);
      assert(!qga.frozen);
      assertEquals([qga.freezes, qga.thaws], [1, 1]);
      // A failing step inside still thaws, and the error is the step's own.
      await assertRejects(
        () =>
          withFrozenGuest(
            host,
            qga.agent,
            () => Promise.reject(new SourceError("snapshot failed")),
          ),
        SourceError,
        "snapshot failed",
      );
      assert(!qga.frozen);
      assertEquals(await guardProcesses(host, qga.socketPath), 0, "guards are disarmed");
      const guard = await ThawGuard.arm(host, qga.agent.thawArgv, 60);
      assert(await guard.armed());
      await guard.disarm();
      assert(!(await guard.armed()));
    });
  } finally {
    await qga.stop();
  }
});

Deno.test("a freeze that times out leaves the guest thawed; the guard thaws when the thaw fails", async () => {
  const qga = await startFakeGuestAgent();
  try {
    await withHost(async (host) => {
      // The agent freezes at once and answers after the timeout. The freeze
      // command has ended on the host when the timeout is reported, so the
      // thaw that follows comes after the freeze, whatever the load.
      qga.freezeReplyDelayMs = 6000;
      await assertRejects(
        () => withFrozenGuest(host, qga.agent, () => Promise.resolve(), { freezeTimeoutMs: 2000 }),
        SourceError,
        "timed out after 2 s; the guest was thawed",
      );
      assertEquals([qga.freezes, qga.thaws], [1, 1], "frozen, then thawed");
      assert(!qga.frozen);

      // The thaw after the failed freeze fails too, and so does every thaw
      // until the test lifts the block: the guest stays frozen until the
      // guard fires (or retries: it may fire before our own thaw) and thaws it.
      const block = `${qga.socketPath}.thaw-blocked`;
      await Deno.writeTextFile(block, "");
      const thaw = shellCommand(qga.agent.thawArgv);
      const blocked = {
        ...qga.agent,
        thawArgv: ["sh", "-c", `[ -e ${block} ] && exit 1; exec ${thaw}`],
      };
      await assertRejects(
        () =>
          withFrozenGuest(host, blocked, () => Promise.resolve(), {
            freezeTimeoutMs: 2000,
            guardSeconds: 4,
          }),
        SourceError,
        "the host thaws it within 4 s",
      );
      assert(qga.frozen);
      assertEquals([qga.freezes, qga.thaws], [2, 1]);
      await Deno.remove(block);
      await waitFor("the guard's thaw", 20_000, () => !qga.frozen);
      assertEquals(qga.thaws, 2);
      await waitFor(
        "the guard to end",
        10_000,
        async () => (await guardProcesses(host, qga.socketPath)) === 0,
      );
    });
  } finally {
    qga.freezeReplyDelayMs = 0;
    await qga.stop();
  }
});

Deno.test("kill -9 of the backend while the guest is frozen: the host-side guard thaws it", async () => {
  const qga = await startFakeGuestAgent();
  const sshd = await startSshd();
  // The killed backend cannot remove its private ssh dir: keep it in one we remove.
  const backendTmp = await Deno.makeTempDir({ prefix: "dirtybit-backend-" });
  try {
    const mod = (p: string) => new URL(p, import.meta.url).href;
    const code = `
      import { SshHost } from ${JSON.stringify(mod("../lib/hosts/ssh.ts"))};
      import { withFrozenGuest } from ${JSON.stringify(mod("../lib/hosts/guest_agent.ts"))};
      const host = await SshHost.connect(${
      JSON.stringify({
        host: sshd.host,
        port: sshd.port,
        keyPath: sshd.keyPath,
        knownHostsPath: sshd.knownHostsPath,
      })
    });
      await withFrozenGuest(host, ${
      JSON.stringify(qga.agent)
    }, () => new Promise(() => {}), { guardSeconds: 3 });
    `;
    const backend = new Deno.Command(Deno.execPath(), {
      args: ["eval", code],
      env: { TMPDIR: backendTmp },
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      await waitFor("the freeze", 30_000, () => qga.frozen);
      backend.kill("SIGKILL");
      await backend.status;
      await waitFor("the guard's thaw", 20_000, () => !qga.frozen);
      assertEquals(qga.thaws, 1);
    } finally {
      try {
        backend.kill("SIGKILL");
      } catch { /* already dead */ }
      await backend.status;
    }
  } finally {
    await sshd.stop();
    await qga.stop();
    await Deno.remove(backendTmp, { recursive: true });
  }
});
