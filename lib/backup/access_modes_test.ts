import { deepEqual, equal, rejects, throws } from "node:assert/strict";
import { ACCESS_MODE_NAMES } from "../core/access_mode_names.ts";
import { UsageError } from "../core/errors.ts";
import type { ExportAccess } from "./access_mode.ts";
import { accessModeNamed, accessModes } from "./access_modes.ts";
import { runVmBackup } from "./vm_job.ts";

Deno.test("access modes: the registry holds the names the parameter table offers, in order", () => {
  deepEqual(accessModes.map((m) => m.name), [...ACCESS_MODE_NAMES]);
  equal(ACCESS_MODE_NAMES.join(","), "ssh_tunnel,direct,api_only");
});

Deno.test("access modes: each by its name, ssh_tunnel by default", () => {
  for (const name of ACCESS_MODE_NAMES) equal(accessModeNamed(name).name, name);
  equal(accessModeNamed().name, "ssh_tunnel");
  equal(accessModeNamed("api_only").kind, "api", "api_only reads no NBD");
});

function nbdExports(name: string, address: string, nbdPort?: number): ExportAccess {
  const mode = accessModeNamed(name);
  if (mode.kind !== "nbd") throw new Error(`${name} is no NBD mode`);
  return mode.exports({ address, nbdPort });
}

Deno.test("access modes: ssh_tunnel serves on a unix socket in the scratch directory", () => {
  const served = nbdExports("ssh_tunnel", "10.0.0.5").serve("/var/lib/x/dirtybit-0a1b2c3d");
  deepEqual(served.server, { socket: "/var/lib/x/dirtybit-0a1b2c3d/nbd.sock" });
  equal(served.uri("vd a"), "nbd+unix:///vd%20a?socket=/var/lib/x/dirtybit-0a1b2c3d/nbd.sock");
  // On this machine the socket is read as it is: no tunnel, no check.
  deepEqual(nbdExports("ssh_tunnel", "10.0.0.5").dataPath(undefined).job, {});
});

Deno.test("access modes: direct serves on the host's nbd_port, 10809 by default", () => {
  const served = nbdExports("direct", "10.0.0.5", 10900).serve("/scratch");
  deepEqual(served.server, { host: "10.0.0.5", port: 10900 });
  equal(served.uri("vda"), "nbd://10.0.0.5:10900/vda");
  equal(nbdExports("direct", "fd00::5").serve("/scratch").uri("vdb"), "nbd://[fd00::5]:10809/vdb");
  deepEqual(nbdExports("direct", "10.0.0.5").dataPath(undefined).job, {});
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
