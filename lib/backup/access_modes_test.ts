import { equal, rejects, throws } from "node:assert/strict";
import { UsageError } from "../core/errors.ts";
import { ACCESS_MODE_NAMES, accessModeNamed } from "./access_modes.ts";
import { runVmBackup } from "./vm_job.ts";

Deno.test("access modes: each by its name, ssh_tunnel by default", () => {
  equal(ACCESS_MODE_NAMES.join(","), "ssh_tunnel,direct,api_only");
  for (const name of ACCESS_MODE_NAMES) equal(accessModeNamed(name).name, name);
  equal(accessModeNamed().name, "ssh_tunnel");
  equal(accessModeNamed("api_only").server, null, "api_only reads no NBD");
});

Deno.test("access modes: an unknown mode is refused in one line, not read as ssh_tunnel", async () => {
  const message = "unknown nbd_access_mode 'nfs': use one of ssh_tunnel, direct, api_only";
  throws(() => accessModeNamed("nfs"), (e) => e instanceof UsageError && e.message === message);
  // Before the cloud is asked anything: the URL leads nowhere.
  const source = {
    vm: "vm1",
    cloud: { url: "http://127.0.0.1:9/client/api", apiKey: "k", secretKey: "s", verifySsl: true },
    accessMode: "nfs",
    ssh: { keyPath: "" },
  };
  await rejects(
    runVmBackup(source, { level: "auto", stateDir: "/nonexistent", compression: "none" }, () => {
      throw new Error("no sink is asked for");
    }),
    (e) => e instanceof UsageError && e.message === message,
  );
});
