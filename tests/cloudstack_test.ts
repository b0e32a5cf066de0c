/**
 * CloudStack client, credentials, resolution and `dirtybit api` against the
 * API simulator (tests/sim/cloudstack.ts), over HTTP and HTTPS (a private CA
 * made with openssl in a temp directory).
 */
import assert from "node:assert/strict";
import { SourceError, UsageError } from "../lib/core/errors.ts";
import {
  CloudStackApiError,
  CloudStackClient,
  type CloudStackClientOptions,
  CloudStackJobError,
} from "../lib/cloudstack/client.ts";
import { loadCredentials } from "../lib/cloudstack/credentials.ts";
import {
  extractVolumeUrl,
  findVm,
  resolveVm,
  snapshotVolume,
  volumeFromSnapshot,
} from "../lib/cloudstack/resolve.ts";
import { encodeQuery, signParams } from "../lib/cloudstack/signing.ts";
import { CloudStackSimulator, type SimScenario, type SimVm } from "./sim/cloudstack.ts";
import { assertRejects } from "./helpers.ts";

const SECRET = "SeCrEt-7hQ2xZ9pL4mN8vB1cK6jW3rT5yU0aS_dF-gH";
const API_KEY = "AkEy-Jd93nf82hfKs0aLq";
const OTHER_SECRET = "0ther-Secret-Zx81Qp";
const HOST_ID = "6a1b2c3d-0000-4aaa-8bbb-000000000001";
const NFS_POOL = "7b2c3d4e-0000-4aaa-8bbb-000000000002";
const LOCAL_POOL = "8c3d4e5f-0000-4aaa-8bbb-000000000003";
const VM_ID = "9d4e5f60-0000-4aaa-8bbb-000000000010";
const ROOT_ID = "a1b2c3d4-1111-4aaa-8bbb-000000000011";
const DATA_ID = "b2c3d4e5-2222-4aaa-8bbb-000000000012";

function uuid(n: number): string {
  return `c0000000-0000-4000-8000-${String(n).padStart(12, "0")}`;
}

function vm(n: number, extra: Partial<SimVm> = {}): SimVm {
  return {
    id: uuid(n),
    name: `web-${n}`,
    displayname: `Web ${n}`,
    instancename: `i-2-${n}-VM`,
    state: "Running",
    hostid: HOST_ID,
    cpunumber: 1,
    memory: 512,
    ...extra,
  };
}

function scenario(): SimScenario {
  return {
    users: [{ apiKey: API_KEY, secretKey: SECRET }, {
      apiKey: "other-key",
      secretKey: OTHER_SECRET,
    }],
    hosts: [{ id: HOST_ID, name: "kvm1.cloud.internal", ipaddress: "127.0.0.1" }],
    pools: [
      { id: NFS_POOL, name: "nfs-primary", type: "NetworkFilesystem", path: "/export/primary" },
      { id: LOCAL_POOL, name: "local", type: "Filesystem", path: "/var/lib/libvirt/images/" },
    ],
    vms: [
      vm(10, {
        id: VM_ID,
        name: "db1",
        displayname: "Database one",
        cpunumber: 2,
        cpuspeed: 2000,
        memory: 4096,
        osdisplayname: "Debian GNU/Linux 12 (64-bit)",
        nic: [
          { id: uuid(901), macaddress: "02:00:4c:5e:00:02", deviceid: "1" },
          { id: uuid(900), macaddress: "02:00:4c:5e:00:01", deviceid: "0" },
        ],
      }),
      vm(11, { name: "db10", displayname: "Database ten" }),
      vm(12, { name: "twin", displayname: "Twin" }),
      vm(13, { name: "twin", displayname: "Twin" }),
      vm(14, { name: "sleeper", displayname: "Sleeper", state: "Stopped", hostid: undefined }),
      ...[20, 21, 22, 23].map((n) => vm(n)),
    ],
    volumes: [
      {
        id: DATA_ID,
        name: "DATA-10",
        type: "DATADISK",
        deviceid: 1,
        size: 2 * 2 ** 30,
        path: "5f1e2d3c-aaaa-4bbb-8ccc-ddddeeeeffff",
        storageid: LOCAL_POOL,
        virtualmachineid: VM_ID,
      },
      {
        id: ROOT_ID,
        name: "ROOT-10",
        type: "ROOT",
        deviceid: 0,
        size: 8 * 2 ** 30,
        path: "0a9b8c7d-1234-4567-89ab-cdef01234567",
        storageid: NFS_POOL,
        virtualmachineid: VM_ID,
      },
    ],
    jobPendingPolls: 2,
  };
}

const FAST: CloudStackClientOptions = { pollIntervalMs: 10, jobTimeoutMs: 5000 };

async function withSim(
  fn: (sim: CloudStackSimulator, client: CloudStackClient) => Promise<void>,
  options: CloudStackClientOptions = FAST,
  secretKey = SECRET,
): Promise<void> {
  const sim = CloudStackSimulator.start(scenario());
  const client = new CloudStackClient({ url: sim.apiUrl, apiKey: API_KEY, secretKey }, options);
  try {
    await fn(sim, client);
  } finally {
    client.close();
    await sim.close();
  }
}

function assertNoSecret(text: string): void {
  assert.ok(!text.includes(SECRET), `secret leaked: ${text}`);
  assert.ok(!text.includes(OTHER_SECRET), `secret leaked: ${text}`);
}

/** The error `promise` rejects with: one line, no secret in it. */
async function rejection(promise: Promise<unknown>): Promise<Error> {
  const err = await assertRejects(promise, Error);
  assert.ok(!err.message.includes("\n"), `not one line: ${err.message}`);
  assertNoSecret(err.message);
  return err;
}

Deno.test("signed GET (v3) and POST (v1) are accepted", async () => {
  await withSim(async (sim, client) => {
    const zones = await client.call("listZones");
    assert.equal(zones.count, 1);
    const vms = await client.call("listVirtualMachines", { keyword: "web 2", listall: "true" }, {
      post: true,
    });
    assert.equal(vms.count, 4);
    assert.deepEqual(sim.requests.map((r) => [r.method, r.accepted]), [["GET", true], [
      "POST",
      true,
    ]]);
    assert.equal(sim.requests[0].params.signatureVersion, "3");
    assert.ok(sim.requests[0].params.expires);
  });
  await withSim(async (sim, client) => {
    await client.call("listZones", {}, { post: true });
    assert.equal(sim.requests[0].params.signatureVersion, undefined);
  }, { ...FAST, signatureVersion: 1 });
});

Deno.test("wrong secret and unknown key are refused with a one-line 401 error", async () => {
  await withSim(
    async (_sim, client) => {
      const err = await rejection(client.call("listZones"));
      assert.ok(err instanceof CloudStackApiError && err instanceof SourceError);
      assert.equal(err.httpStatus, 401);
      assert.match(err.message, /refused the API key or request signature/);
      assert.match(err.message, /unable to verify user credentials and\/or request signature/);
    },
    FAST,
    OTHER_SECRET,
  );
  const sim = CloudStackSimulator.start(scenario());
  const client = new CloudStackClient(
    { url: sim.apiUrl, apiKey: "nobody", secretKey: SECRET },
    FAST,
  );
  try {
    const err = await rejection(client.call("listZones"));
    assert.equal((err as CloudStackApiError).httpStatus, 401);
  } finally {
    client.close();
    await sim.close();
  }
});

Deno.test("an expired v3 signature is refused; a valid one with the same keys passes", async () => {
  const sim = CloudStackSimulator.start(scenario());
  try {
    const keys = { apiKey: API_KEY, secretKey: SECRET };
    const send = async (expires: Date) => {
      const params = signParams({ command: "listZones", response: "json" }, keys, { expires });
      const res = await fetch(`${sim.apiUrl}?${encodeQuery(params)}`);
      return { status: res.status, body: await res.json() };
    };
    const expired = await send(new Date(Date.now() - 1000));
    assert.equal(expired.status, 401);
    assert.equal(expired.body.listzonesresponse.errorcode, 401);
    assert.equal((await send(new Date(Date.now() + 60_000))).status, 200);
  } finally {
    await sim.close();
  }
});

Deno.test("listAll follows pages until every item is read", async () => {
  await withSim(async (sim, client) => {
    const vms = await client.listAll("listVirtualMachines", { listall: "true" }, "virtualmachine");
    assert.equal(vms.length, 9);
    assert.equal(new Set(vms.map((v) => v.id)).size, 9);
    const pages = sim.calls("listVirtualMachines").map((r) => [r.params.page, r.params.pagesize]);
    assert.deepEqual(pages, [["1", "4"], ["2", "4"], ["3", "4"]]);
    assert.deepEqual(
      await client.listAll("listVirtualMachines", { keyword: "nothing" }, "virtualmachine"),
      [],
    );
  }, { ...FAST, pageSize: 4 });
});

Deno.test("async jobs: success after pending polls, failure quotes errortext, deadline", async () => {
  await withSim(async (sim, client) => {
    const snapshotId = await snapshotVolume(client, ROOT_ID);
    assert.match(snapshotId, /^[0-9a-f-]{36}$/);
    assert.equal(sim.calls("queryAsyncJobResult").length, 3);
    const volumeId = await volumeFromSnapshot(client, snapshotId, "dirtybit-tmp");
    assert.match(volumeId, /^[0-9a-f-]{36}$/);

    sim.scenario.jobFailures = {
      createSnapshot: {
        errorcode: 530,
        errortext: "Failed to create snapshot due to an internal error",
      },
    };
    const failed = await rejection(snapshotVolume(client, ROOT_ID));
    assert.ok(failed instanceof CloudStackJobError);
    assert.match(
      failed.message,
      /failed: Failed to create snapshot due to an internal error \(errorcode 530\)/,
    );
  }, FAST);
  await withSim(async (sim, client) => {
    sim.scenario.jobPendingPolls = 1_000_000;
    const late = await rejection(snapshotVolume(client, ROOT_ID));
    assert.ok(late instanceof CloudStackJobError);
    assert.match(late.message, /still pending at the deadline.*queryAsyncJobResult jobid=/);
  }, { pollIntervalMs: 10, jobTimeoutMs: 100 });
});

Deno.test("API errors keep HTTP status, errorcode and errortext on one line", async () => {
  await withSim(async (sim, client) => {
    const bad = await rejection(client.call("listVolumes", { virtualmachineid: "not-a-uuid" }));
    assert.ok(bad instanceof CloudStackApiError);
    assert.equal(bad.httpStatus, 431);
    assert.equal(bad.errorCode, 431);
    assert.match(
      bad.message,
      /^CloudStack refused listVolumes: Unable to execute API command listvolumes .* \(HTTP 431\)$/,
    );
    sim.scenario.failures = {
      listHosts: { errorcode: 530, errortext: "Internal error executing command" },
    };
    const internal = await rejection(client.call("listHosts"));
    assert.match(internal.message, /Internal error executing command \(HTTP 530\)/);
    await rejection(client.call("listZones", { signature: "x" }));
    assert.ok((await rejection(client.call("listZones", { apiKey: "x" }))) instanceof UsageError);
  });
});

Deno.test("an unreachable endpoint is a SourceError without query, key or secret", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const client = new CloudStackClient(
    { url: `http://127.0.0.1:${port}/client/api`, apiKey: API_KEY, secretKey: SECRET },
    FAST,
  );
  try {
    const err = await rejection(client.call("listZones"));
    assert.ok(err instanceof SourceError);
    assert.match(
      err.message,
      /cannot reach CloudStack at http:\/\/127\.0\.0\.1:\d+\/client\/api \(listZones\)/,
    );
    assert.ok(!err.message.includes(API_KEY) && !err.message.includes("signature="), err.message);
  } finally {
    client.close();
  }
});

Deno.test("bad endpoint settings are usage errors", () => {
  const make = (url: string) => () => new CloudStackClient({ url, apiKey: "k", secretKey: "s" });
  assert.throws(make("ftp://x/"), UsageError);
  assert.throws(make("not a url"), UsageError);
  assert.throws(make("http://u:p@host/client/api"), UsageError);
  assert.throws(
    () => new CloudStackClient({ url: "http://h/", apiKey: "", secretKey: "s" }),
    UsageError,
  );
  const client = new CloudStackClient({ url: "http://h:8080", apiKey: "k", secretKey: "s" });
  assert.equal(client.endpoint, "http://h:8080/client/api");
  client.close();
});

Deno.test("resolve a VM by UUID, instance name, name and display name", async () => {
  await withSim(async (_sim, client) => {
    for (const ref of [VM_ID, "i-2-10-VM", "db1", "Database one"]) {
      const found = await resolveVm(client, ref);
      assert.equal(found.id, VM_ID, ref);
    }
    const resolved = await resolveVm(client, "i-2-10-VM");
    assert.equal(resolved.instanceName, "i-2-10-VM");
    assert.equal(resolved.hostAddress, "127.0.0.1");
    assert.equal(resolved.hostName, "kvm1.cloud.internal");
    assert.deepEqual(resolved.serviceOffering.cpu, 2);
    assert.deepEqual(resolved.serviceOffering.memory, 4096);
    assert.equal(resolved.osType.name, "Debian GNU/Linux 12 (64-bit)");
    assert.deepEqual(resolved.nics.map((n) => n.mac), ["02:00:4c:5e:00:01", "02:00:4c:5e:00:02"]);
    assert.deepEqual(resolved.volumes.map((v) => [v.type, v.deviceId, v.poolPath]), [
      ["ROOT", 0, `/mnt/${NFS_POOL}/0a9b8c7d-1234-4567-89ab-cdef01234567`],
      ["DATADISK", 1, "/var/lib/libvirt/images/5f1e2d3c-aaaa-4bbb-8ccc-ddddeeeeffff"],
    ]);
    assert.equal(resolved.volumes[0].serial, "a1b2c3d411114aaa8bbb");
    assert.equal(resolved.volumes[0].size, 8 * 2 ** 30);
    // "db1" is also a substring of "db10": only the exact match counts.
    assert.equal((await findVm(client, "db10")).id, uuid(11));
  });
});

Deno.test("resolution errors: not found, ambiguous, not running", async () => {
  await withSim(async (_sim, client) => {
    const missingId = await rejection(resolveVm(client, uuid(999)));
    assert.ok(missingId instanceof SourceError);
    assert.match(missingId.message, /VM c0000000-0000-4000-8000-000000000999 not found/);
    const missingName = await rejection(resolveVm(client, "db"));
    assert.match(missingName.message, /VM 'db' not found .*similar: db1, db10/);
    const twin = await rejection(resolveVm(client, "twin"));
    assert.ok(twin instanceof UsageError);
    assert.match(twin.message, /ambiguous: 2 VMs have that name/);
    assert.equal((await resolveVm(client, "i-2-12-VM")).id, uuid(12));
    const stopped = await rejection(resolveVm(client, "sleeper"));
    assert.match(stopped.message, /is Stopped, not Running/);
    assert.equal((await resolveVm(client, "sleeper", { requireRunning: false })).state, "Stopped");
  });
});

Deno.test("extractVolume URL streams the volume file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-cs-" });
  try {
    const file = `${dir}/volume.qcow2`;
    const content = Uint8Array.from({ length: 300_000 }, (_, i) => (i * 7919) % 251);
    await Deno.writeFile(file, content);
    await withSim(async (sim, client) => {
      sim.scenario.extractFile = file;
      const url = await extractVolumeUrl(client, ROOT_ID, "0f3a1c2e-4b5d-4e6f-8a7b-9c0d1e2f3a4b");
      assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/userdata\/.+\.qcow2$/);
      const body = new Uint8Array(await new Response(await client.download(url)).arrayBuffer());
      assert.deepEqual(body, content);
      const gone = await rejection(
        client.download(url.replace(/userdata\/[^/]+/, "userdata/none")),
      );
      assert.match(gone.message, /HTTP 404/);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("credentials: flags > environment > config file; secret files; conflicts", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-cs-" });
  try {
    await Deno.writeTextFile(`${dir}/secret`, `${SECRET}\n`);
    await Deno.writeTextFile(
      `${dir}/cs.conf`,
      `# CloudStack\nurl = http://conf/client/api\napikey = "conf-key"\nsecretkey_file = secret\nverify_ssl = yes\n`,
    );
    await Deno.writeTextFile(
      `${dir}/cs.json`,
      JSON.stringify({ url: "http://json/", apikey: "j", secretkey: "js" }),
    );
    const fromConf = await loadCredentials({ config: `${dir}/cs.conf` }, {});
    assert.deepEqual(fromConf, {
      url: "http://conf/client/api",
      apiKey: "conf-key",
      secretKey: SECRET,
      verifySsl: true,
    });
    const mixed = await loadCredentials(
      { url: "http://flag/", config: `${dir}/cs.conf` },
      { DIRTYBIT_URL: "http://env/", DIRTYBIT_APIKEY: "env-key", DIRTYBIT_VERIFY_SSL: "false" },
    );
    assert.deepEqual([mixed.url, mixed.apiKey, mixed.secretKey, mixed.verifySsl], [
      "http://flag/",
      "env-key",
      SECRET,
      false,
    ]);
    assert.equal(
      (await loadCredentials({}, { DIRTYBIT_CONFIG: `${dir}/cs.json` })).secretKey,
      "js",
    );
    const warnings: string[] = [];
    await loadCredentials(
      { url: "http://x/", apikey: "k", secretkey: SECRET },
      {},
      (w) => warnings.push(w((p) => p)),
    );
    assert.equal(warnings.length, 1);
    assertNoSecret(warnings[0]);
    const both = await rejection(
      loadCredentials({
        url: "http://x/",
        apikey: "k",
        secretkey: SECRET,
        secretkey_file: `${dir}/secret`,
      }, {}),
    );
    assert.ok(both instanceof UsageError);
    assert.ok((await rejection(loadCredentials({ apikey: "k" }, {}))) instanceof UsageError);
    await Deno.writeTextFile(`${dir}/bad.conf`, `url = http://x/\npassword = ${SECRET}\n`);
    const bad = await rejection(loadCredentials({ config: `${dir}/bad.conf` }, {}));
    assert.match(bad.message, /line 2: unknown key 'password'/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function runApi(args: string[], env: Record<string, string> = {}) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../main.ts", import.meta.url).pathname, "api", ...args],
    env: { ...env, NO_COLOR: "1" },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(output.stdout);
  const stderr = new TextDecoder().decode(output.stderr);
  assertNoSecret(stdout + stderr);
  return { code: output.code, stdout, stderr };
}

Deno.test("dirtybit api end to end: JSON out, refused keys one line, no secret anywhere", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-cs-" });
  const sim = CloudStackSimulator.start(scenario());
  try {
    await Deno.writeTextFile(`${dir}/secret`, SECRET);
    const ok = await runApi([
      "listVirtualMachines",
      "keyword=i-2-10-VM",
      "listall=true",
      "--url",
      sim.apiUrl,
      "--apikey",
      API_KEY,
      "--secretkey-file",
      `${dir}/secret`,
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    const answer = JSON.parse(ok.stdout);
    assert.equal(answer.listvirtualmachinesresponse.virtualmachine[0].instancename, "i-2-10-VM");

    await Deno.writeTextFile(
      `${dir}/cs.conf`,
      `url = ${sim.apiUrl}\napikey = ${API_KEY}\nsecretkey_file = secret\n`,
    );
    const viaConfig = await runApi(["listHosts", "--post", "--config", `${dir}/cs.conf`]);
    assert.equal(viaConfig.code, 0, viaConfig.stderr);
    assert.equal(JSON.parse(viaConfig.stdout).listhostsresponse.host[0].ipaddress, "127.0.0.1");

    const refused = await runApi(["listZones"], {
      DIRTYBIT_URL: sim.apiUrl,
      DIRTYBIT_APIKEY: API_KEY,
      DIRTYBIT_SECRETKEY: OTHER_SECRET,
    });
    assert.equal(refused.code, 5);
    assert.equal(refused.stdout, "");
    assert.equal(refused.stderr.trim().split("\n").length, 1, refused.stderr);
    assert.match(
      refused.stderr,
      /^dirtybit: CloudStack refused the API key or request signature for listZones/,
    );

    const literal = await runApi([
      "listZones",
      "--url",
      sim.apiUrl,
      "--apikey",
      API_KEY,
      "--secretkey",
      SECRET,
    ]);
    assert.equal(literal.code, 0);
    assert.match(
      literal.stderr,
      /warning: --secretkey given directly is visible to others .*prefer --secretkey-file/,
    );

    const usage = await runApi(["listZones", "oops", "--config", `${dir}/cs.conf`]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /'oops' is not key=value/);
    const help = await runApi(["--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /usage: dirtybit api COMMAND/);
  } finally {
    await sim.close();
    await Deno.remove(dir, { recursive: true });
  }
});

async function makeCerts(dir: string): Promise<void> {
  const run = async (args: string[]) => {
    const out = await new Deno.Command("openssl", {
      args,
      cwd: dir,
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(`openssl ${args[0]}: ${new TextDecoder().decode(out.stderr)}`);
    }
  };
  await run([
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "1",
    "-subj",
    "/CN=dirtybit test CA",
  ]);
  await run([
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "key.pem",
    "-out",
    "srv.csr",
    "-subj",
    "/CN=127.0.0.1",
  ]);
  await Deno.writeTextFile(
    `${dir}/ext.cnf`,
    "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
  );
  await run([
    "x509",
    "-req",
    "-in",
    "srv.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "cert.pem",
    "-days",
    "1",
    "-extfile",
    "ext.cnf",
  ]);
}

Deno.test("HTTPS: private CA via ca_file, refused without it, verify_ssl=false warns on every call", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-cs-tls-" });
  try {
    await makeCerts(dir);
    const sim = CloudStackSimulator.start(scenario(), {
      cert: await Deno.readTextFile(`${dir}/cert.pem`),
      key: await Deno.readTextFile(`${dir}/key.pem`),
    });
    const endpoint = { url: sim.apiUrl, apiKey: API_KEY, secretKey: SECRET };
    assert.match(sim.apiUrl, /^https:/);
    try {
      const trusted = new CloudStackClient(endpoint, { ...FAST, caFile: `${dir}/ca.pem` });
      try {
        assert.equal((await trusted.call("listZones")).count, 1);
      } finally {
        trusted.close();
      }

      const untrusted = new CloudStackClient(endpoint, FAST);
      try {
        const err = await rejection(untrusted.call("listZones"));
        assert.ok(err instanceof SourceError);
        assert.match(err.message, /certificate/);
      } finally {
        untrusted.close();
      }

      const warnings: string[] = [];
      const insecure = new CloudStackClient(endpoint, {
        ...FAST,
        verifySsl: false,
        logger: { warn: (m) => warnings.push(m) },
      });
      try {
        assert.equal((await insecure.call("listZones")).count, 1);
        assert.equal((await insecure.call("listHosts", {}, { post: true })).count, 1);
        const wrongKey = new CloudStackClient({ ...endpoint, secretKey: OTHER_SECRET }, {
          verifySsl: false,
          logger: { warn: () => {} },
        });
        const refused = await rejection(wrongKey.call("listZones"));
        wrongKey.close();
        assert.match(refused.message, /refused the API key/);
      } finally {
        insecure.close();
      }
      assert.equal(warnings.length, 2);
      assert.match(warnings[0], /verify_ssl=false/);
      warnings.forEach(assertNoSecret);
    } finally {
      await sim.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
