import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { isAgentUnavailable, libvirtGuestAgent, parseFsCount } from "./guest_agent.ts";

Deno.test("parseFsCount reads virsh's freeze/thaw answer", () => {
  assertEquals(parseFsCount("Froze 2 filesystem(s)\n"), 2);
  assertEquals(parseFsCount("Thawed 0 filesystem(s)\n"), 0);
  assertEquals(parseFsCount(""), 0);
});

Deno.test("libvirtGuestAgent uses domfsfreeze/domfsthaw (no custom-ga-command taint)", () => {
  const agent = libvirtGuestAgent("i-2-10-VM");
  assertEquals(agent.freezeArgv, ["virsh", "-c", "qemu:///system", "domfsfreeze", "i-2-10-VM"]);
  assertEquals(agent.thawArgv, ["virsh", "-c", "qemu:///system", "domfsthaw", "i-2-10-VM"]);
});

Deno.test("isAgentUnavailable recognises libvirt's refusals that never reach the guest", () => {
  assertEquals(
    isAgentUnavailable(
      "domfsfreeze i-2-10-VM failed: error: Unable to freeze filesystems; error: Guest agent is " +
        "not responding: QEMU guest agent is not connected",
    ),
    true,
  );
  assertEquals(
    isAgentUnavailable("error: argument unsupported: QEMU guest agent is not configured"),
    true,
  );
  assertEquals(isAgentUnavailable("guest-fsfreeze-freeze timed out after 30 s"), false);
});
