import { deepStrictEqual as assertEquals, match as assertMatch } from "node:assert/strict";
import { describeSshFailure, shellCommand, shellQuote } from "./ssh.ts";

Deno.test("shellCommand quotes argv so the remote shell gets it back unchanged", () => {
  assertEquals(shellCommand(["virsh", "domstate", "i-2-10-VM"]), "virsh domstate i-2-10-VM");
  assertEquals(shellCommand(["echo", "it's $HOME; rm -rf /"]), `echo 'it'\\''s $HOME; rm -rf /'`);
  assertEquals(shellCommand(["printf", ""]), "printf ''");
  assertEquals(shellQuote("/var/lib/libvirt/qemu/x.sock"), "/var/lib/libvirt/qemu/x.sock");
  assertEquals(shellQuote("a\nb"), "'a\nb'");
});

Deno.test("describeSshFailure names the cause in one line", () => {
  const d = (stderr: string) => describeSshFailure(stderr, "root@h:22", "h:22", "/kh");
  assertMatch(
    d("@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n...\nHost key verification failed.\n"),
    /^host key of h:22 does not match known_hosts: \/kh;/,
  );
  assertMatch(
    d("No ED25519 host key is known for [h]:22 and you have requested strict checking.\nHost key verification failed.\n"),
    /^host key of h:22 is not in known_hosts: \/kh;/,
  );
  assertMatch(
    d("root@h: Permission denied (publickey).\n"),
    /^SSH key authentication as root@h:22 was refused/,
  );
  assertMatch(
    d("ssh: connect to host h port 22: Connection refused\n"),
    /^cannot reach SSH on h:22: ssh: connect/,
  );
  const leaked = d(
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nweird\n",
  );
  assertEquals(leaked.includes("PRIVATE") || leaked.includes("b3BlbnNzaC1rZXkt"), false);
  assertEquals(d("").split("\n").length, 1);
});
