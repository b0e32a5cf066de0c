import assert from "node:assert/strict";
import { parseParams } from "./params.ts";
import { vmSourceFromParams } from "./sources.ts";

const CLOUD = { vm: "vm1", url: "http://127.0.0.1:9/client/api", apikey: "k", secretkey: "s" };

Deno.test("vm source: a mode through the CloudStack API needs no SSH key, an NBD mode does", async () => {
  const api = await vmSourceFromParams(parseParams({ ...CLOUD, nbd_access_mode: "api_only" }));
  assert.equal(api.accessMode, "api_only");
  assert.equal(api.ssh.keyPath, "");
  for (const mode of ["ssh_tunnel", "direct"]) {
    const nbd = await vmSourceFromParams(
      parseParams({ ...CLOUD, nbd_access_mode: mode, ssh_key: "/keys/id" }),
    );
    assert.equal(nbd.accessMode, mode);
    assert.equal(nbd.ssh.keyPath, "/keys/id");
  }
});
