import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { libvirtGuestAgent, parseFsCount } from "./guest_agent.ts";

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
