/**
 * Cross-restore end to end: backup chains (written with the real
 * StreamWriter) restored with `dirtybit restore --to ...` into target hosts
 * that are sshd instances on loopback (tests/crossrestore/fake_host.ts) or
 * local staging directories. Pushed disks must pass `qemu-img check` and
 * `qemu-img compare` against the chain's plain restore; the generated
 * configurations are parsed back field by field.
 *
 * `qm`, `vim-cmd` and PowerShell do not exist here: `--register` is checked
 * through fake tools on the sshd sessions' PATH that log the command sent.
 */
import assert from "node:assert/strict";
import { describeError, TargetError, UsageError } from "../lib/core/errors.ts";
import { flagOf } from "../lib/cli/args.ts";
import { restoreCommand } from "../lib/cli/restore.ts";
import type { VmDefinition } from "../lib/model/vm_definition.ts";
import { type FakeHost, startFakeHost } from "./crossrestore/fake_host.ts";
import { parseProperties, parseProxmoxConf, parseVmx } from "./crossrestore/parse.ts";
import { assertSameDisk, referenceRestore, writeChain } from "./crossrestore/streams.ts";
import { run } from "./helpers.ts";
import { child, children, parseXml } from "./crossrestore/xml.ts";
import { assertOneLineError, cliCommand, dirtybit, dirtybitOk } from "./fixtures/cli.ts";
import { delay } from "../lib/core/async.ts";

const MiB = 1 << 20;

function vmDef(firmware: "bios" | "uefi", diskSizes: number[]): VmDefinition {
  return {
    name: "web01",
    cpus: 2,
    memoryMiB: 1536,
    firmware,
    machine: firmware === "uefi" ? "q35" : "pc",
    disks: diskSizes.map((size, i) => ({
      name: i === 0 ? "ROOT-7" : `DATA-${i}`,
      bus: i === 0 ? "virtio-blk" : "virtio-scsi",
      deviceId: i,
      size,
      boot: i === 0,
    })),
    nics: [{ mac: "02:00:4c:5e:00:07", model: "virtio" }],
    osType: "Debian GNU/Linux 12 (64-bit)",
    osFamily: "linux",
  };
}

/** Two disks (6 MiB + 3 MiB + 512 B), each a full and an incremental, with `metadata.vm`. */
async function twoDiskChains(dir: string, firmware: "bios" | "uefi") {
  const sizes = [6 * MiB, 3 * MiB + 512];
  const def = vmDef(firmware, sizes);
  const root = await writeChain(dir, "ROOT-7", sizes[0], 11, { vm: def });
  const data = await writeChain(dir, "DATA-1", sizes[1], 23, { vm: def });
  await referenceRestore(`${dir}/ROOT-7.raw`, root);
  await referenceRestore(`${dir}/DATA-1.raw`, data);
  return { streams: [...root, ...data], refs: [`${dir}/ROOT-7.raw`, `${dir}/DATA-1.raw`] };
}

/**
 * SIGKILLs the processes that hold `path` open (the "host" is this machine:
 * that is the remote receiver, `cat` or `dd`) once more than `bytes` of it are
 * on disk. False when none was found in time.
 */
async function killWriterOf(path: string, bytes: number): Promise<boolean> {
  // By time, not by tries: on a loaded machine the push may take half a minute to begin.
  for (const deadline = Date.now() + 120_000; Date.now() < deadline;) {
    const stored = await Deno.stat(path).then((s) => (s.blocks ?? 0) * 512, () => 0);
    if (stored > bytes) {
      const out = await new Deno.Command("fuser", { args: [path], stdout: "piped", stderr: "null" })
        .output();
      const pids = new TextDecoder().decode(out.stdout).trim().split(/\s+/).filter(Boolean);
      for (const pid of pids) Deno.kill(Number(pid), "SIGKILL");
      if (pids.length) return true;
    }
    await delay(5);
  }
  return false;
}

/** Runs `fn` with a fresh temp dir and a fake target host; removes both afterwards. */
async function withWorkAndHost(
  prefix: string,
  fn: (work: string, host: FakeHost) => Promise<void>,
  hostOptions: Parameters<typeof startFakeHost>[0] = {},
): Promise<void> {
  const work = await Deno.makeTempDir({ prefix });
  const host = await startFakeHost(hostOptions);
  try {
    await fn(work, host);
  } finally {
    await host.stop();
    await Deno.remove(work, { recursive: true });
  }
}

async function listTree(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const rel = prefix + e.name;
    out.push(rel);
    if (e.isDirectory) out.push(...await listTree(`${dir}/${e.name}`, rel + "/"));
  }
  return out.sort();
}

Deno.test("proxmox over SSH: qcow2 disks, UEFI efidisk, conf with same bus and MACs, qm on --register", () =>
  withWorkAndHost("dbit-xr-pve-", async (work, host) => {
    const { streams, refs } = await twoDiskChains(work, "uefi");
    const node = `${work}/node`;
    await Deno.mkdir(`${node}/etc/pve/qemu-server`, { recursive: true });
    await Deno.writeTextFile(`${node}/etc/pve/qemu-server/100.conf`, "name: other\n");
    await Deno.mkdir(`${node}/usr/share/pve-edk2-firmware`, { recursive: true });
    await Deno.writeFile(
      `${node}/usr/share/pve-edk2-firmware/OVMF_VARS_4M.fd`,
      new Uint8Array(540672),
    );
    const code = await restoreCommand.run([
      "--to",
      "proxmox",
      ...host.destArgs(node),
      "--register",
      "--bridge",
      "vmbr1",
      ...streams,
    ]);
    assert.equal(code, 0);
    const images = `${node}/var/lib/vz/images/101`;
    await assertSameDisk(`${images}/vm-101-disk-0.qcow2`, "qcow2", refs[0]);
    await assertSameDisk(`${images}/vm-101-disk-1.qcow2`, "qcow2", refs[1]);
    assert.equal((await Deno.stat(`${images}/vm-101-disk-2.raw`)).size, 540672);
    const conf = parseProxmoxConf(await Deno.readTextFile(`${node}/etc/pve/qemu-server/101.conf`));
    assert.equal(conf.get("name"), "web01");
    assert.equal(conf.get("cores"), "2");
    assert.equal(conf.get("memory"), "1536");
    assert.equal(conf.get("bios"), "ovmf");
    assert.equal(conf.get("machine"), "q35");
    assert.equal(parseProperties(conf.get("efidisk0")!).first, "local:101/vm-101-disk-2.raw");
    assert.equal(parseProperties(conf.get("virtio0")!).first, "local:101/vm-101-disk-0.qcow2");
    assert.equal(parseProperties(conf.get("virtio0")!).props.get("size"), "6M");
    assert.equal(parseProperties(conf.get("scsi0")!).first, "local:101/vm-101-disk-1.qcow2");
    assert.equal(conf.get("scsihw"), "virtio-scsi-single");
    assert.equal(conf.get("net0"), "virtio=02:00:4C:5E:00:07,bridge=vmbr1");
    assert.equal(conf.get("boot"), "order=virtio0;net0");
    assert.deepEqual(await host.calls(), ["qm rescan --vmid 101", "qm config 101"]);
    assert.ok(!(await listTree(node)).some((p) => p.endsWith(".partial")));
  }));

Deno.test("proxmox: a push interrupted mid-disk leaves no conf, no disk files, and fails", () =>
  withWorkAndHost("dbit-xr-cut-", async (work, host) => {
    const streams = await writeChain(work, "ROOT-7", 48 * MiB, 5, {
      vm: vmDef("bios", [48 * MiB]),
    });
    const node = `${work}/node`;
    const partial = `${node}/var/lib/vz/images/100/vm-100-disk-0.raw.partial`;
    const restore = restoreCommand.run([
      "--to",
      "proxmox",
      ...host.destArgs(node),
      "--disk-format",
      "raw",
      ...streams,
    ]);
    const outcome = restore.then(() => "finished", (err) => err);
    const killed = await killWriterOf(partial, 2 * MiB);
    assert.ok(killed, "the remote receiver was found and killed mid-push");
    const err = await outcome;
    assert.ok(err instanceof TargetError, `push failed with a TargetError, got ${err}`);
    const tree = await listTree(node);
    assert.ok(!tree.some((p) => p.includes("qemu-server/") && p.endsWith(".conf")), tree.join(" "));
    assert.ok(!tree.some((p) => p.endsWith(".raw") || p.endsWith(".partial")), tree.join(" "));
  }));

Deno.test("proxmox: kill -9 of dirtybit mid-push, then the same command again replaces its stale .partial", () =>
  withWorkAndHost("dbit-xr-rerun-", async (work, host) => {
    const def = vmDef("bios", [48 * MiB]);
    const streams = await writeChain(work, "ROOT-7", 48 * MiB, 5, { vm: def });
    await referenceRestore(`${work}/ROOT-7.raw`, streams);
    const node = `${work}/node`;
    const args = ["restore", "--to", "proxmox", ...host.destArgs(node), "--disk-format", "raw"];
    const partial = `${node}/var/lib/vz/images/100/vm-100-disk-0.raw.partial`;
    const first = cliCommand([...args, ...streams], { stdout: "null", stderr: "null" }).spawn();
    let killed = false;
    for (let i = 0; i < 2000 && !killed; i++) {
      const stored = await Deno.stat(partial).then((s) => (s.blocks ?? 0) * 512, () => 0);
      if (stored > 2 * MiB) {
        first.kill("SIGKILL");
        killed = true;
      } else await delay(5);
    }
    assert.ok(killed, "dirtybit was killed mid-push");
    await first.status;
    await delay(200); // the remote receiver ends once its input closes
    assert.ok(await Deno.stat(partial).then(() => true, () => false), "the kill left a .partial");
    await dirtybitOk([...args, ...streams]);
    await assertSameDisk(
      `${node}/var/lib/vz/images/100/vm-100-disk-0.raw`,
      "raw",
      `${work}/ROOT-7.raw`,
    );
    assert.ok(!(await listTree(node)).some((p) => p.endsWith(".partial")));
  }));

Deno.test("proxmox lvmthin over SSH: volumes allocated first, raw written in place and thin, conf names them", () =>
  withWorkAndHost("dbit-xr-lvm-", async (work, host) => {
    const { streams, refs } = await twoDiskChains(work, "uefi");
    const node = `${work}/node`;
    const template = `${node}/usr/share/pve-edk2-firmware/OVMF_VARS_4M.fd`;
    await Deno.mkdir(`${node}/usr/share/pve-edk2-firmware`, { recursive: true });
    await Deno.writeFile(template, new Uint8Array(540672).fill(0xa5));
    const args = ["--to", "proxmox", ...host.destArgs(node), "--storage-type", "lvmthin"];
    await assert.rejects(
      () => restoreCommand.run([...args, "--disk-format", "qcow2", ...streams]),
      /lvmthin volumes hold raw disks/,
    );
    assert.equal(await restoreCommand.run([...args, "--register", ...streams]), 0);
    const vol = `${host.volumeDir}/local-lvm`;
    // The stand-ins are 4 MiB-rounded like LVM extents: compare checks the excess is zero.
    await assertSameDisk(`${vol}/vm-100-disk-0`, "raw", refs[0]);
    await assertSameDisk(`${vol}/vm-100-disk-1`, "raw", refs[1]);
    assert.equal((await Deno.stat(`${vol}/vm-100-disk-1`)).size, 4 * MiB);
    assert.deepEqual(await Deno.readFile(`${vol}/vm-100-disk-2`), await Deno.readFile(template));
    // Zero blocks were skipped, not written: the thin volume stays thin (6 MiB disk, 2 MiB zero gap).
    const disk0 = await Deno.stat(`${vol}/vm-100-disk-0`);
    assert.ok(disk0.blocks! * 512 <= 4 * MiB + 64 * 1024, `${disk0.blocks! * 512} bytes stored`);
    const conf = parseProxmoxConf(await Deno.readTextFile(`${node}/etc/pve/qemu-server/100.conf`));
    assert.equal(conf.get("virtio0"), "local-lvm:vm-100-disk-0,iothread=1,size=6M");
    assert.equal(parseProperties(conf.get("scsi0")!).first, "local-lvm:vm-100-disk-1");
    assert.equal(parseProperties(conf.get("efidisk0")!).first, "local-lvm:vm-100-disk-2");
    assert.deepEqual(await host.calls(), [
      "pvesm alloc local-lvm 100 vm-100-disk-0 6144",
      "pvesm path local-lvm:vm-100-disk-0",
      "pvesm alloc local-lvm 100 vm-100-disk-1 3073",
      "pvesm path local-lvm:vm-100-disk-1",
      "pvesm alloc local-lvm 100 vm-100-disk-2 528",
      "pvesm path local-lvm:vm-100-disk-2",
      "qm rescan --vmid 100",
      "qm config 100",
    ]);
    assert.ok(!(await listTree(node)).some((p) => p.includes("var/lib/vz")));
    await assert.rejects(
      () =>
        restoreCommand.run([
          "--to",
          "proxmox",
          "--dest",
          work,
          "--storage-type",
          "zfspool",
          ...streams,
        ]),
      /storage type zfspool needs an ssh:\/\/ destination/,
    );
  }));

Deno.test("proxmox zfspool: a push interrupted mid-disk frees the volumes, writes no conf, and fails", () =>
  withWorkAndHost("dbit-xr-zcut-", async (work, host) => {
    const streams = [
      ...await writeChain(work, "ROOT-7", 48 * MiB, 5),
      ...await writeChain(work, "DATA-1", 2 * MiB, 6),
    ];
    const restore = restoreCommand.run([
      "--to",
      "proxmox",
      ...host.destArgs(`${work}/node`),
      "--storage-type",
      "zfspool",
      "--storage",
      "tank",
      "--vmid",
      "200",
      ...streams,
    ]);
    const outcome = restore.then(() => "finished", (err) => err);
    assert.ok(await killWriterOf(`${host.volumeDir}/tank/vm-200-disk-0`, 2 * MiB));
    const err = await outcome;
    assert.ok(err instanceof TargetError, `push failed with a TargetError, got ${err}`);
    assert.match(err.message, /writing .*vm-200-disk-0 on 127\.0\.0\.1 failed/);
    assert.deepEqual(await listTree(`${host.volumeDir}/tank`), []);
    const calls = await host.calls();
    assert.deepEqual(calls.filter((c) => c.startsWith("pvesm free")), [
      "pvesm free tank:vm-200-disk-1",
      "pvesm free tank:vm-200-disk-0",
    ]);
    assert.ok(!(await listTree(work)).some((p) => p.endsWith(".conf")));
  }, { slowDd: true }));

Deno.test("vmware datastore over SSH: vmfs descriptor + flat extent, .vmx, vim-cmd on --register", () =>
  withWorkAndHost("dbit-xr-esx-", async (work, host) => {
    const { streams, refs } = await twoDiskChains(work, "bios");
    const ds = `${work}/vmfs/volumes/datastore1`;
    await Deno.mkdir(ds, { recursive: true });
    const code = await restoreCommand.run([
      "--to",
      "vmware",
      ...host.destArgs(ds),
      "--register",
      "--name",
      "web02",
      "--cpus",
      "4",
      ...streams,
    ]);
    assert.equal(code, 0);
    const dir = `${ds}/web02`;
    assert.deepEqual(await listTree(dir), [
      "web02-flat.vmdk",
      "web02.vmdk",
      "web02.vmx",
      "web02_1-flat.vmdk",
      "web02_1.vmdk",
    ]);
    await assertSameDisk(`${dir}/web02.vmdk`, "vmdk-flat", refs[0]);
    await assertSameDisk(`${dir}/web02_1.vmdk`, "vmdk-flat", refs[1]);
    const vmx = parseVmx(await Deno.readTextFile(`${dir}/web02.vmx`));
    assert.equal(vmx.get("displayName"), "web02");
    assert.equal(vmx.get("numvcpus"), "4");
    assert.equal(vmx.get("memSize"), "1536");
    assert.equal(vmx.get("guestOS"), "debian10-64");
    assert.equal(vmx.get("scsi0.virtualDev"), "lsilogic");
    assert.equal(vmx.get("scsi0:0.fileName"), "web02.vmdk");
    assert.equal(vmx.get("scsi0:1.fileName"), "web02_1.vmdk");
    assert.equal(vmx.get("ethernet0.virtualDev"), "e1000");
    assert.equal(vmx.get("ethernet0.address"), "02:00:4c:5e:00:07");
    assert.deepEqual(await host.calls(), [`vim-cmd solo/registervm ${dir}/web02.vmx`]);
  }));

Deno.test("hyperv over SSH (posix staging host): VHDX disks, New-VM script, pwsh on --register", () =>
  withWorkAndHost("dbit-xr-hv-", async (work, host) => {
    const { streams, refs } = await twoDiskChains(work, "uefi");
    const folder = `${work}/VMs`;
    const code = await restoreCommand.run([
      "--to",
      "hyperv",
      ...host.destArgs(folder),
      "--remote-shell",
      "posix",
      "--switch",
      "External",
      "--register",
      ...streams,
    ]);
    assert.equal(code, 0);
    const dir = `${folder}/web01`;
    await assertSameDisk(`${dir}/web01-disk0.vhdx`, "vhdx", refs[0]);
    await assertSameDisk(`${dir}/web01-disk1.vhdx`, "vhdx", refs[1]);
    const script = await Deno.readTextFile(`${dir}/create-web01.ps1`);
    assert.match(
      script,
      /New-VM -Name 'web01' -Generation 2 -MemoryStartupBytes 1536MB -VHDPath \(Join-Path \$PSScriptRoot 'web01-disk0\.vhdx'\) .*-SwitchName 'External'/,
    );
    assert.match(script, /Set-VMProcessor -VMName 'web01' -Count 2/);
    assert.match(
      script,
      /Add-VMHardDiskDrive -VMName 'web01' -ControllerType SCSI -Path \(Join-Path \$PSScriptRoot 'web01-disk1\.vhdx'\)/,
    );
    assert.match(script, /-SecureBootTemplate MicrosoftUEFICertificateAuthority/);
    assert.match(script, /-StaticMacAddress '02004C5E0007'/);
    assert.deepEqual(await host.calls(), [
      `pwsh -NoProfile -NonInteractive -File ${dir}/create-web01.ps1`,
    ]);
  }));

Deno.test("vmware OVA to a local file: tar with the .ovf first, streamOptimized VMDKs, manifest", async () => {
  const work = await Deno.makeTempDir({ prefix: "dbit-xr-ova-" });
  try {
    const { streams, refs } = await twoDiskChains(work, "bios");
    const ova = `${work}/out/web01.ova`;
    await Deno.mkdir(`${work}/out`);
    assert.equal(
      await restoreCommand.run([
        "--to",
        "vmware",
        "--ova",
        ova,
        "--nic-model",
        "vmxnet3",
        ...streams,
      ]),
      0,
    );
    const members = (await run("tar", ["tf", ova])).trim().split("\n");
    assert.deepEqual(members, ["web01.ovf", "web01-disk1.vmdk", "web01-disk2.vmdk", "web01.mf"]);
    await Deno.mkdir(`${work}/x`);
    await run("tar", ["xf", ova, "-C", `${work}/x`]);
    await assertSameDisk(`${work}/x/web01-disk1.vmdk`, "vmdk", refs[0]);
    await assertSameDisk(`${work}/x/web01-disk2.vmdk`, "vmdk", refs[1]);
    const info = JSON.parse(
      await run("qemu-img", ["info", "--output=json", `${work}/x/web01-disk1.vmdk`]),
    );
    assert.equal(info["format-specific"].data["create-type"], "streamOptimized");
    const env = parseXml(await Deno.readTextFile(`${work}/x/web01.ovf`));
    for (const f of children(child(env, "References"), "File")) {
      const size = (await Deno.stat(`${work}/x/${f.attrs["ovf:href"]}`)).size;
      assert.equal(f.attrs["ovf:size"], String(size), `ovf:size of ${f.attrs["ovf:href"]}`);
    }
    const nic = children(child(child(env, "VirtualSystem"), "VirtualHardwareSection"), "Item")
      .find((i) => i.children.some((c) => c.name === "rasd:ResourceType" && c.text === "10"))!;
    assert.equal(child(nic, "rasd:ResourceSubType").text, "VmxNet3");
    const mf = await Deno.readTextFile(`${work}/x/web01.mf`);
    for (const name of members.slice(0, 3)) {
      const sum = (await run("sha256sum", [`${work}/x/${name}`])).split(" ")[0];
      assert.ok(mf.includes(`SHA256(${name})= ${sum}\n`), `manifest entry of ${name}`);
    }
    assert.ok(!(await listTree(`${work}/out`)).some((p) => p.endsWith(".partial")));
  } finally {
    await Deno.remove(work, { recursive: true });
  }
});

Deno.test("proxmox to a local staging dir: raw disks, free VMID from the nodes tree, no definition in streams", async () => {
  const work = await Deno.makeTempDir({ prefix: "dbit-xr-stage-" });
  try {
    const streams = await writeChain(work, "vda", 2 * MiB, 3);
    await referenceRestore(`${work}/vda.raw`, streams);
    const stage = `${work}/stage`;
    await Deno.mkdir(`${stage}/etc/pve/nodes/pve1/lxc`, { recursive: true });
    await Deno.writeTextFile(`${stage}/etc/pve/nodes/pve1/lxc/100.conf`, "");
    const code = await restoreCommand.run([
      "--to",
      "proxmox",
      "--dest",
      stage,
      "--disk-format",
      "raw",
      "--memory",
      "512",
      ...streams,
    ]);
    assert.equal(code, 0);
    await assertSameDisk(
      `${stage}/var/lib/vz/images/101/vm-101-disk-0.raw`,
      "raw",
      `${work}/vda.raw`,
    );
    const conf = parseProxmoxConf(await Deno.readTextFile(`${stage}/etc/pve/qemu-server/101.conf`));
    assert.equal(conf.get("name"), "vda");
    assert.equal(conf.get("memory"), "512");
    assert.equal(conf.get("virtio0"), "local:101/vm-101-disk-0.raw,iothread=1,size=2M");
    assert.equal(conf.get("net0"), undefined);
    await assert.rejects(
      () => restoreCommand.run(["--to", "proxmox", "--dest", stage, "--vmid", "101", ...streams]),
      TargetError,
    );
  } finally {
    await Deno.remove(work, { recursive: true });
  }
});

Deno.test("vmware OVA to stdout piped into tar: same members and descriptor as the OVA written to a file, disks equal", async () => {
  const work = await Deno.makeTempDir({ prefix: "dbit-xr-ova1-" });
  try {
    const { streams, refs } = await twoDiskChains(work, "bios");
    const args = ["restore", "--to", "vmware", "--name", "db1", ...streams];
    const cli = cliCommand([...args, "--ova", "-"], { stdin: "null" }).spawn();
    await Deno.mkdir(`${work}/piped`);
    const tar = new Deno.Command("tar", {
      args: ["xvf", "-", "-C", `${work}/piped`],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const [, listed, cliErr] = await Promise.all([
      cli.stdout.pipeTo(tar.stdin),
      tar.output(),
      new Response(cli.stderr).text(),
    ]);
    assert.equal((await cli.status).code, 0, cliErr);
    assert.match(cliErr, /\nrestore of db1 to vmware: read .* MB\/s\n$/, "the summary ends it");
    assert.equal(listed.code, 0, new TextDecoder().decode(listed.stderr));
    const members = new TextDecoder().decode(listed.stdout).trim().split("\n");
    assert.deepEqual(members, ["db1.ovf", "db1-disk1.vmdk", "db1-disk2.vmdk", "db1.mf"]);
    await dirtybitOk([...args, "--ova", `${work}/db1.ova`]);
    assert.deepEqual((await run("tar", ["tf", `${work}/db1.ova`])).trim().split("\n"), members);
    await Deno.mkdir(`${work}/file`);
    await run("tar", ["xf", `${work}/db1.ova`, "-C", `${work}/file`]);
    // VMDKs carry a random CID, so only the descriptor is compared byte for byte.
    await run("cmp", [`${work}/piped/db1.ovf`, `${work}/file/db1.ovf`]);
    await assertSameDisk(`${work}/piped/db1-disk1.vmdk`, "vmdk", refs[0]);
    await assertSameDisk(`${work}/piped/db1-disk2.vmdk`, "vmdk", refs[1]);
    const mf = await Deno.readTextFile(`${work}/piped/db1.mf`);
    for (const name of members.slice(0, 3)) {
      const sum = (await run("sha256sum", [`${work}/piped/${name}`])).split(" ")[0];
      assert.ok(mf.includes(`SHA256(${name})= ${sum}\n`), `manifest entry of ${name}`);
    }
  } finally {
    await Deno.remove(work, { recursive: true });
  }
});

Deno.test("vmware OVA under an SSH --dest: the package alone in the dir (no .partial), an existing one refused", () =>
  withWorkAndHost("dbit-xr-ova2-", async (work, host) => {
    const { streams, refs } = await twoDiskChains(work, "uefi");
    const out = `${work}/out`;
    await Deno.mkdir(out);
    const args = ["--to", "vmware", "--ova", "web01.ova", ...host.destArgs(out), ...streams];
    assert.equal(await restoreCommand.run(args), 0);
    assert.deepEqual(await listTree(out), ["web01.ova"]);
    const members = (await run("tar", ["tf", `${out}/web01.ova`])).trim().split("\n");
    assert.deepEqual(members, ["web01.ovf", "web01-disk1.vmdk", "web01-disk2.vmdk", "web01.mf"]);
    await Deno.mkdir(`${work}/x`);
    await run("tar", ["xf", `${out}/web01.ova`, "-C", `${work}/x`]);
    await assertSameDisk(`${work}/x/web01-disk1.vmdk`, "vmdk", refs[0]);
    const env = parseXml(await Deno.readTextFile(`${work}/x/web01.ovf`));
    assert.equal(children(child(env, "References"), "File").length, 2);
    await assert.rejects(() => restoreCommand.run(args), /web01\.ova already exists/);
  }));

Deno.test("restore --to refuses '-' as a STREAM in one line that says why and what to do", async () => {
  const r = await dirtybit(["restore", "--to", "vmware", "--ova", "x.ova", "-"]);
  const line = assertOneLineError(r, 2, "reads each stream more than once");
  assert.match(line, /save the stream to a file and name the file$/);
});

Deno.test("restore --to: usage errors name the flag", async () => {
  const run = (args: string[]) => restoreCommand.run(["--to", ...args, "x.dbit"]);
  await assert.rejects(() => run(["proxmox"]), /--dest/);
  await assert.rejects(() => run(["xen", "--dest", "/tmp"]), UsageError);
  await assert.rejects(
    () => run(["hyperv", "--dest", "/tmp", "--vmid", "100"]),
    /--vmid applies to --to proxmox only/,
  );
  // A check of the use case words it for the front end that prints it, as lib/cli/main.ts does.
  const said = (args: string[]) => run(args).then(String, (e) => describeError(e, flagOf));
  assert.match(
    await said(["proxmox", "--dest", "ssh://h/x"]),
    /an ssh:\/\/ --dest needs --ssh-key/,
  );
  assert.match(
    await said(["proxmox", "--dest", "/tmp", "--remote-shell", "posix"]),
    /--remote-shell needs/,
  );
  await assert.rejects(() => run(["proxmox", "--dest", "http://h/x"]), UsageError);
  await assert.rejects(() => run(["vmware", "--ova", "a.ova", "--register"]), /--register/);
  await assert.rejects(() => run(["vmware", "--ova", "-", "--json"]), /drop --json/);
  await assert.rejects(
    () => run(["hyperv", "--dest", "/tmp", "--storage-type", "lvmthin"]),
    /--storage-type applies to --to proxmox only/,
  );
  await assert.rejects(() => run(["proxmox", "--dest", "/tmp", "--cpus", "0"]), /--cpus/);
});
