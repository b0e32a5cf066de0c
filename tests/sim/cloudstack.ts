/**
 * A CloudStack management-server simulator for tests (never imported by
 * product code). It listens on 127.0.0.1 (a random port, HTTP or HTTPS),
 * verifies request signatures the way `ApiServer.verifyRequest` does (its own
 * implementation, not the client's: names sorted as sent, Java URLEncoder
 * values, lower-cased, HMAC-SHA1; version 3 with `expires`), and answers the
 * calls dirtybit uses in CloudStack's JSON shapes, with pagination, async jobs
 * and error answers (`errorcode`/`errortext`, HTTP status = errorcode).
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createHmac, timingSafeEqual } from "node:crypto";

/** An API key pair of an enabled user. */
export interface SimUser {
  apiKey: string;
  secretKey: string;
}

/** A KVM host (listHosts). */
export interface SimHost {
  id: string;
  name: string;
  ipaddress: string;
  state?: string;
}

/** A primary storage pool (listStoragePools). */
export interface SimPool {
  id: string;
  name: string;
  /** NetworkFilesystem, Filesystem, SharedMountPoint, RBD... */
  type: string;
  /** Export path (NFS) or local path. */
  path: string;
  ipaddress?: string;
}

/** A volume (listVolumes). */
export interface SimVolume {
  id: string;
  name: string;
  type: "ROOT" | "DATADISK";
  deviceid?: number;
  size: number;
  /** File name in the pool (not the id). */
  path: string;
  storageid: string;
  virtualmachineid?: string;
  state?: string;
}

/** A NIC of a VM. */
export interface SimNic {
  id: string;
  macaddress: string;
  ipaddress?: string;
  networkid?: string;
  isdefault?: boolean;
  deviceid?: string;
}

/** A VM (listVirtualMachines). */
export interface SimVm {
  id: string;
  /** The VM's name (host name); `name=` matches it as a substring. */
  name: string;
  displayname: string;
  instancename: string;
  state: string;
  hostid?: string;
  serviceofferingid?: string;
  cpunumber: number;
  cpuspeed?: number;
  memory: number;
  ostypeid?: string;
  osdisplayname?: string;
  nic?: SimNic[];
}

/** An error answer: HTTP status = errorcode, as CloudStack sends it. */
export interface SimFailure {
  errorcode: number;
  errortext: string;
}

/** What the simulated cloud holds and how it misbehaves; tests may change it at any time. */
export interface SimScenario {
  users: SimUser[];
  vms?: SimVm[];
  volumes?: SimVolume[];
  pools?: SimPool[];
  hosts?: SimHost[];
  /** Page size when a list call gives none (CloudStack's default.page.size). */
  defaultPageSize?: number;
  /** queryAsyncJobResult answers "pending" this many times before the job ends (default 1). */
  jobPendingPolls?: number;
  /** Synchronous failures by command name (case-insensitive). */
  failures?: Record<string, SimFailure>;
  /** Async jobs of these commands fail with this result. */
  jobFailures?: Record<string, SimFailure>;
  /** File served at the URL extractVolume hands out. */
  extractFile?: string;
  /**
   * Per volume id, the file extractVolume serves for it, or for a volume
   * created from a snapshot of it (as CloudStack would: the snapshot's data).
   */
  extractFiles?: Record<string, string>;
  /** The server's clock (ms since the epoch) for `expires` checks; default Date.now. */
  now?: () => number;
}

/** One request as the simulator saw it (signature left out). */
export interface SimRequest {
  method: string;
  command: string;
  params: Record<string, string>;
  accepted: boolean;
}

interface SimJob {
  command: string;
  pollsLeft: number;
  result: Record<string, unknown>;
  failure?: SimFailure;
  created: string;
}

type Json = Record<string, unknown>;

const REFUSED = "unable to verify user credentials and/or request signature";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const ID_PARAMS = [
  "id",
  "virtualmachineid",
  "hostid",
  "storageid",
  "volumeid",
  "snapshotid",
  "zoneid",
];

class ApiFailure extends Error {
  constructor(readonly errorcode: number, readonly errortext: string) {
    super(errortext);
  }
}

/** The running simulator. */
export class CloudStackSimulator {
  readonly requests: SimRequest[] = [];
  readonly #jobs = new Map<string, SimJob>();
  readonly #downloads = new Map<string, string>();
  /** Snapshot id -> volume id, and volume created from a snapshot -> that volume id. */
  readonly #snapshotOf = new Map<string, string>();
  readonly #createdFrom = new Map<string, string>();
  #server!: Deno.HttpServer<Deno.NetAddr>;

  private constructor(readonly scenario: SimScenario, readonly scheme: "http" | "https") {}

  /** Starts a simulator; with `tls` it speaks HTTPS with that PEM cert and key. */
  static start(scenario: SimScenario, tls?: { cert: string; key: string }): CloudStackSimulator {
    const sim = new CloudStackSimulator(scenario, tls ? "https" : "http");
    sim.#server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {}, ...(tls ?? {}) },
      (request) => sim.#handle(request),
    );
    return sim;
  }

  /** `http(s)://127.0.0.1:PORT` */
  get origin(): string {
    return `${this.scheme}://127.0.0.1:${this.#server.addr.port}`;
  }

  /** The API endpoint. */
  get apiUrl(): string {
    return `${this.origin}/client/api`;
  }

  /** Accepted requests of one command, in order. */
  calls(command: string): SimRequest[] {
    return this.requests.filter((r) =>
      r.accepted && r.command.toLowerCase() === command.toLowerCase()
    );
  }

  /** Stops listening and waits for the server to end. */
  async close(): Promise<void> {
    await this.#server.shutdown();
  }

  async #handle(request: Request): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname.startsWith("/userdata/")) return await this.#serveDownload(url);
    if (url.pathname !== "/client/api") return new Response("not found", { status: 404 });
    const params: Record<string, string> = {};
    // The servlet merges query and form body; the first value of a name wins.
    const merge = (source: URLSearchParams) => {
      for (const [k, v] of source) if (!(k in params)) params[k] = v;
    };
    merge(url.searchParams);
    if (request.method === "POST") merge(new URLSearchParams(await request.text()));
    const command = params.command ?? "";
    const responseName = command ? `${command.toLowerCase()}response` : "errorresponse";
    const accepted = this.#verify(params);
    const { signature: _signature, ...logged } = params;
    this.requests.push({ method: request.method, command, params: logged, accepted });
    if (!accepted) return errorAnswer(responseName, 401, REFUSED);
    try {
      const failure = findCaseless(this.scenario.failures, command);
      if (failure) throw new ApiFailure(failure.errorcode, failure.errortext);
      return json({ [responseName]: this.#dispatch(command, params) });
    } catch (err) {
      if (err instanceof ApiFailure) return errorAnswer(responseName, err.errorcode, err.errortext);
      throw err;
    }
  }

  /** ApiServer.verifyRequest, re-told. */
  #verify(params: Record<string, string>): boolean {
    if (!params.command || !KNOWN.has(params.command)) return false;
    const names = Object.keys(params).sort();
    let signature: string | undefined;
    let apiKey: string | undefined;
    let version: string | undefined;
    let expires: string | undefined;
    const pairs: string[] = [];
    for (const name of names) {
      const value = params[name];
      if (name.toLowerCase() === "signature") {
        signature = value;
        continue;
      }
      if (name.toLowerCase() === "apikey") apiKey = value;
      else if (name.toLowerCase() === "signatureversion") version = value;
      else if (name.toLowerCase() === "expires") expires = value;
      pairs.push(`${name}=${javaUrlEncode(value)}`);
    }
    if (!signature || !apiKey) return false;
    if (version === "3") {
      if (!expires) return false;
      const when = parseExpires(expires);
      if (when === undefined || when < (this.scenario.now ?? Date.now)()) return false;
    }
    const user = this.scenario.users.find((u) => u.apiKey === apiKey);
    if (!user) return false;
    const computed = createHmac("sha1", user.secretKey).update(pairs.join("&").toLowerCase())
      .digest();
    const given = Buffer.from(signature, "base64");
    return given.length === computed.length && timingSafeEqual(given, computed) &&
      given.toString("base64") === signature;
  }

  #dispatch(command: string, p: Record<string, string>): Json {
    for (const name of ID_PARAMS) {
      if (p[name] !== undefined && !UUID.test(p[name])) throw invalidParam(command, name, p[name]);
    }
    const s = this.scenario;
    switch (command) {
      case "listVirtualMachines": {
        if (p.id && !(s.vms ?? []).some((v) => v.id === p.id)) {
          throw invalidParam(command, "id", p.id);
        }
        const vms = (s.vms ?? []).filter((vm) =>
          (!p.id || vm.id === p.id) &&
          (!p.name || vm.name.toLowerCase().includes(p.name.toLowerCase())) &&
          (!p.state || vm.state.toLowerCase() === p.state.toLowerCase()) &&
          (!p.hostid || vm.hostid === p.hostid) &&
          (!p.keyword || [vm.name, vm.displayname, vm.instancename].some((t) =>
            t.toLowerCase().includes(p.keyword.toLowerCase())
          ) || vm.state === p.keyword)
        );
        return this.#page(p, "virtualmachine", vms.map((vm) => this.#vmJson(vm)));
      }
      case "listVolumes": {
        if (p.virtualmachineid && !(s.vms ?? []).some((v) => v.id === p.virtualmachineid)) {
          throw invalidParam(command, "virtualmachineid", p.virtualmachineid);
        }
        const volumes = (s.volumes ?? []).filter((v) =>
          (!p.id || v.id === p.id) &&
          (!p.virtualmachineid || v.virtualmachineid === p.virtualmachineid) &&
          (!p.type || v.type === p.type.toUpperCase())
        );
        return this.#page(p, "volume", volumes.map((v) => this.#volumeJson(v)));
      }
      case "listStoragePools": {
        const pools = (s.pools ?? []).filter((pool) => !p.id || pool.id === p.id);
        return this.#page(p, "storagepool", pools.map((pool) => this.#poolJson(pool)));
      }
      case "listHosts": {
        const hosts = (s.hosts ?? []).filter((h) => !p.id || h.id === p.id);
        return this.#page(p, "host", hosts.map(hostJson));
      }
      case "listZones":
        return this.#page(p, "zone", [{
          id: ZONE_ID,
          name: "zone1",
          allocationstate: "Enabled",
          networktype: "Advanced",
        }]);
      case "queryAsyncJobResult":
        return this.#queryJob(p.jobid);
      case "createSnapshot": {
        const volume = this.#volume(command, "volumeid", p.volumeid);
        const id = crypto.randomUUID();
        this.#snapshotOf.set(id, volume.id);
        return this.#startJob(command, id, {
          snapshot: {
            id,
            volumeid: volume.id,
            volumename: volume.name,
            volumetype: volume.type,
            snapshottype: "MANUAL",
            intervaltype: "MANUAL",
            state: "BackedUp",
            name: `${volume.name}_${Date.now()}`,
            created: timestamp(),
            physicalsize: volume.size,
            virtualsize: volume.size,
          },
        });
      }
      case "createVolume": {
        const id = crypto.randomUUID();
        if (!p.snapshotid && !p.diskofferingid) {
          throw new ApiFailure(
            431,
            "Either disk Offering Id or snapshot Id must be passed whilst creating volume",
          );
        }
        const source = p.snapshotid ? this.#snapshotOf.get(p.snapshotid) : undefined;
        if (p.snapshotid && !source) throw invalidParam(command, "snapshotid", p.snapshotid);
        if (source) this.#createdFrom.set(id, source);
        return this.#startJob(command, id, {
          volume: {
            id,
            name: p.name ?? `vol-${id.slice(0, 8)}`,
            type: "DATADISK",
            state: "Ready",
            created: timestamp(),
          },
        });
      }
      case "extractVolume": {
        const source = this.#createdFrom.get(p.id ?? "");
        const volume = source
          ? { id: p.id!, name: `from-${source.slice(0, 8)}` }
          : this.#volume(command, "id", p.id);
        if (!p.mode || !["HTTP_DOWNLOAD", "FTP_UPLOAD"].includes(p.mode)) {
          throw new ApiFailure(431, "Please specify a valid extract Mode");
        }
        const token = crypto.randomUUID();
        this.#downloads.set(token, s.extractFiles?.[source ?? volume.id] ?? s.extractFile ?? "");
        return this.#startJob(command, volume.id, {
          volume: {
            id: volume.id,
            name: volume.name,
            extractId: crypto.randomUUID(),
            state: "DOWNLOAD_URL_CREATED",
            status: "",
            extractMode: p.mode,
            url: `${this.origin}/userdata/${token}.qcow2`,
            zoneid: ZONE_ID,
            zonename: "zone1",
            created: timestamp(),
          },
        });
      }
      case "deleteSnapshot":
        return this.#startJob(command, p.id ?? "", { success: true });
      case "deleteVolume":
        return { success: "true" };
      default:
        throw new ApiFailure(
          432,
          `The given command '${command}' either does not exist, is not available for user.`,
        );
    }
  }

  #page(p: Record<string, string>, key: string, items: Json[]): Json {
    if (!items.length) return {};
    const size = p.pagesize ? Number(p.pagesize) : this.scenario.defaultPageSize ?? 500;
    const page = p.page ? Number(p.page) : 1;
    if (
      !Number.isInteger(page) || page < 1 || !Number.isInteger(size) || (size < 1 && size !== -1)
    ) {
      throw new ApiFailure(
        431,
        `Unable to execute API command due to invalid value. Invalid page or pagesize`,
      );
    }
    const slice = size === -1 ? items : items.slice((page - 1) * size, page * size);
    return slice.length ? { count: items.length, [key]: slice } : { count: items.length };
  }

  #startJob(command: string, instanceId: string, result: Json): Json {
    const jobid = crypto.randomUUID();
    this.#jobs.set(jobid, {
      command,
      pollsLeft: this.scenario.jobPendingPolls ?? 1,
      result,
      failure: findCaseless(this.scenario.jobFailures, command),
      created: timestamp(),
    });
    return { id: instanceId, jobid };
  }

  #queryJob(jobid: string | undefined): Json {
    const job = jobid ? this.#jobs.get(jobid) : undefined;
    if (!jobid || !job) throw invalidParam("queryAsyncJobResult", "jobid", jobid ?? "");
    const base = {
      accountid: ACCOUNT_ID,
      userid: USER_ID,
      cmd: `org.apache.cloudstack.api.command.user.${job.command}Cmd`,
      jobprocstatus: 0,
      created: job.created,
      jobid,
    };
    if (job.pollsLeft > 0) {
      job.pollsLeft--;
      return { ...base, jobstatus: 0, jobresultcode: 0 };
    }
    if (job.failure) {
      return {
        ...base,
        jobstatus: 2,
        jobresultcode: 530,
        jobresulttype: "object",
        jobresult: { errorcode: job.failure.errorcode, errortext: job.failure.errortext },
        completed: timestamp(),
      };
    }
    return {
      ...base,
      jobstatus: 1,
      jobresultcode: 0,
      jobresulttype: "object",
      jobresult: job.result,
      completed: timestamp(),
    };
  }

  #volume(command: string, name: string, id: string | undefined): SimVolume {
    const volume = (this.scenario.volumes ?? []).find((v) => v.id === id);
    if (!volume) throw invalidParam(command, name, id ?? "");
    return volume;
  }

  #vmJson(vm: SimVm): Json {
    const host = (this.scenario.hosts ?? []).find((h) => h.id === vm.hostid);
    return {
      id: vm.id,
      name: vm.name,
      displayname: vm.displayname,
      account: "admin",
      domainid: DOMAIN_ID,
      domain: "ROOT",
      created: "2024-05-01T10:00:00+0000",
      state: vm.state,
      haenable: false,
      zoneid: ZONE_ID,
      zonename: "zone1",
      ...(vm.hostid && vm.state === "Running"
        ? { hostid: vm.hostid, hostname: host?.name ?? "" }
        : {}),
      templateid: "5e3b7a22-49a1-4b3c-9a1d-2f1e0c9d8b7a",
      templatename: "debian-12",
      serviceofferingid: vm.serviceofferingid ?? "c6f1a2b3-1111-4a2b-8c3d-4e5f6a7b8c9d",
      serviceofferingname: "Small Instance",
      cpunumber: vm.cpunumber,
      cpuspeed: vm.cpuspeed ?? 1000,
      memory: vm.memory,
      guestosid: vm.ostypeid ?? "7e4a9b1c-2222-4d3e-9f0a-1b2c3d4e5f60",
      ostypeid: vm.ostypeid ?? "7e4a9b1c-2222-4d3e-9f0a-1b2c3d4e5f60",
      osdisplayname: vm.osdisplayname ?? "Debian GNU/Linux 12 (64-bit)",
      rootdeviceid: 0,
      rootdevicetype: "ROOT",
      securitygroup: [],
      nic: (vm.nic ?? []).map((n, i) => ({
        id: n.id,
        networkid: n.networkid ?? "a1b2c3d4-3333-4e5f-8a9b-0c1d2e3f4a5b",
        networkname: "guestnet",
        netmask: "255.255.255.0",
        gateway: "10.1.1.1",
        ipaddress: n.ipaddress ?? `10.1.1.${10 + i}`,
        traffictype: "Guest",
        type: "Isolated",
        isdefault: n.isdefault ?? i === 0,
        macaddress: n.macaddress,
        deviceid: n.deviceid ?? String(i),
      })),
      hypervisor: "KVM",
      instancename: vm.instancename,
      details: {},
      tags: [],
    };
  }

  #volumeJson(v: SimVolume): Json {
    const vm = (this.scenario.vms ?? []).find((x) => x.id === v.virtualmachineid);
    const pool = (this.scenario.pools ?? []).find((x) => x.id === v.storageid);
    return {
      id: v.id,
      name: v.name,
      zoneid: ZONE_ID,
      zonename: "zone1",
      type: v.type,
      ...(v.deviceid !== undefined ? { deviceid: v.deviceid } : {}),
      ...(vm
        ? {
          virtualmachineid: vm.id,
          vmname: vm.name,
          vmdisplayname: vm.displayname,
          vmstate: vm.state,
        }
        : {}),
      provisioningtype: "thin",
      size: v.size,
      created: "2024-05-01T10:00:00+0000",
      state: v.state ?? "Ready",
      account: "admin",
      domainid: DOMAIN_ID,
      domain: "ROOT",
      storagetype: "shared",
      hypervisor: "KVM",
      storageid: v.storageid,
      storage: pool?.name ?? "",
      path: v.path,
      destroyed: false,
      isextractable: true,
    };
  }

  #poolJson(pool: SimPool): Json {
    return {
      id: pool.id,
      zoneid: ZONE_ID,
      zonename: "zone1",
      name: pool.name,
      ipaddress: pool.ipaddress ?? "10.0.0.5",
      path: pool.path,
      created: "2024-05-01T09:00:00+0000",
      type: pool.type,
      clusterid: CLUSTER_ID,
      clustername: "cluster1",
      disksizetotal: 1099511627776,
      disksizeallocated: 0,
      disksizeused: 0,
      state: "Up",
      scope: "CLUSTER",
      hypervisor: "KVM",
      provider: "DefaultPrimary",
    };
  }

  async #serveDownload(url: URL): Promise<Response> {
    const token = url.pathname.slice("/userdata/".length).replace(/\.qcow2$/, "");
    const file = this.#downloads.get(token);
    if (file === undefined) return new Response("not found", { status: 404 });
    if (!file) return new Response(new Uint8Array(0));
    const handle = await Deno.open(file);
    const { size } = await handle.stat();
    return new Response(handle.readable, {
      headers: { "content-type": "application/octet-stream", "content-length": String(size) },
    });
  }
}

const KNOWN = new Set([
  "listVirtualMachines",
  "listVolumes",
  "listStoragePools",
  "listHosts",
  "listZones",
  "queryAsyncJobResult",
  "createSnapshot",
  "createVolume",
  "extractVolume",
  "deleteSnapshot",
  "deleteVolume",
]);
const ZONE_ID = "0f3a1c2e-4b5d-4e6f-8a7b-9c0d1e2f3a4b";
const DOMAIN_ID = "1d2e3f4a-5b6c-4d7e-8f9a-0b1c2d3e4f5a";
const ACCOUNT_ID = "2e3f4a5b-6c7d-4e8f-9a0b-1c2d3e4f5a6b";
const USER_ID = "3f4a5b6c-7d8e-4f9a-0b1c-2d3e4f5a6b7c";
const CLUSTER_ID = "4a5b6c7d-8e9f-4a0b-1c2d-3e4f5a6b7c8d";

function hostJson(h: SimHost): Json {
  return {
    id: h.id,
    name: h.name,
    state: h.state ?? "Up",
    type: "Routing",
    ipaddress: h.ipaddress,
    zoneid: ZONE_ID,
    zonename: "zone1",
    clusterid: CLUSTER_ID,
    clustername: "cluster1",
    hypervisor: "KVM",
    resourcestate: "Enabled",
    created: "2024-05-01T09:00:00+0000",
  };
}

function invalidParam(command: string, name: string, value: string): ApiFailure {
  return new ApiFailure(
    431,
    `Unable to execute API command ${command.toLowerCase()} due to invalid value. Invalid parameter ${name} ` +
      `value=${value} due to incorrect long value format, or entity does not exist or due to incorrect ` +
      "parameter annotation for the field in api cmd class.",
  );
}

function errorAnswer(responseName: string, code: number, text: string): Response {
  const cserrorcode = code === 431 ? 4350 : 9999;
  return json(
    { [responseName]: { uuidList: [], errorcode: code, cserrorcode, errortext: text } },
    code,
  );
}

function json(body: Json, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json;charset=utf-8" },
  });
}

function findCaseless<T>(table: Record<string, T> | undefined, key: string): T | undefined {
  if (!table) return undefined;
  const hit = Object.keys(table).find((k) => k.toLowerCase() === key.toLowerCase());
  return hit === undefined ? undefined : table[hit];
}

/** java.net.URLEncoder.encode(value, UTF-8) with "+" replaced by "%20" (so a space is %20). */
function javaUrlEncode(value: string): string {
  return Array.from(new TextEncoder().encode(value), (b) => {
    const c = String.fromCharCode(b);
    return /[A-Za-z0-9.\-*_]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }).join("");
}

/** DateUtil.parseTZDateString: ISO offset forms and yyyy-MM-dd'T'HH:mm:ssZ (+0000). */
function parseExpires(text: string): number | undefined {
  const m = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?)(Z|[+-]\d{2}:?\d{2})$/.exec(text);
  if (!m) return undefined;
  const zone = m[2] === "Z" ? "Z" : `${m[2].slice(0, 3)}:${m[2].slice(-2)}`;
  const when = Date.parse(`${m[1]}${zone}`);
  return Number.isNaN(when) ? undefined : when;
}

function timestamp(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, "+0000");
}
