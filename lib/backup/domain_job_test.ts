import { deepStrictEqual as assertEquals, throws } from "node:assert/strict";
import { UsageError } from "../core/errors.ts";
import { parseConnectUri } from "./domain_job.ts";

Deno.test("parseConnectUri: local URIs, and qemu+ssh:// runs virsh on the host's system libvirt", () => {
  assertEquals(parseConnectUri("qemu:///system"), { local: true, uri: "qemu:///system" });
  assertEquals(parseConnectUri("qemu+ssh://backup@kvm1.example:2222/system"), {
    local: false,
    uri: "qemu:///system",
    host: "kvm1.example",
    port: 2222,
    user: "backup",
  });
  assertEquals(parseConnectUri("qemu+ssh://[fd00::1]/system"), {
    local: false,
    uri: "qemu:///system",
    host: "fd00::1",
  });
  throws(() => parseConnectUri("qemu+tcp://kvm1/system"), UsageError);
  throws(() => parseConnectUri("qemu+ssh://kvm1/system?keyfile=x"), UsageError);
});
