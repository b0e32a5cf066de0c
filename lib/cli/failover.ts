/**
 * `dirtybit failover pre|exec`, `dirtybit failback pre|exec` and
 * `dirtybit reprotect`: the role changes of DESIGN 1.1 on top of the
 * replication channel. Each step checks the disk's role at its site first
 * (lib/replication/roles.ts) and refuses the wrong state with the reason.
 *
 * @module
 */
import { join } from "node:path";
import type { Command } from "./command.ts";
import { log, senderSetup } from "./replicate.ts";
import { parseParamFlags } from "./params.ts";
import { ChainError, UsageError } from "../core/errors.ts";
import type { QmpTransport } from "../qemu/mod.ts";
import { loadRole, saveRole } from "../replication/role_file.ts";
import { applyStep, checkStep } from "../replication/roles.ts";
import {
  changeRemoteRole,
  freshState,
  loadSenderState,
  pushCycle,
  resyncDisk,
  saveSenderState,
} from "../replication/sender.ts";
import { ReplicaStore } from "../replication/store.ts";
import { libvirtXml, qemuScript } from "../replication/vm_files.ts";

const SENDER_FLAGS =
  "--qmp SOCKET --node NODE --dr HOST:PORT --psk-file F --name NAME --state-dir DIR [--nbd-socket P]";

const HELP = `
usage: dirtybit failover pre   ${SENDER_FLAGS}          (original site)
       dirtybit failover exec  --name NAME --replica-dir DIR [--memory MiB] [--cpus N]   (DR site)
       dirtybit failback pre   ${SENDER_FLAGS}          (DR site, toward the original site)
       dirtybit failback exec  ${SENDER_FLAGS}          (DR site)
       dirtybit reprotect      ${SENDER_FLAGS}          (the side that stays primary)

failover pre    final replication cycle, then fence the disk: no more cycles from here.
                Shut the VM down first, or what it writes afterwards stays here.
failover exec   promote the replica at the DR site: DIR/NAME.qcow2 becomes the VM's disk;
                writes DIR/NAME.qemu.sh (qemu-system-x86_64) and DIR/NAME.xml (libvirt).
failback pre    the DR VM's disk (--qmp/--node at the DR site) is compared block by block
                (xxHash64) with the original primary's disk, which a receiver at the original
                site serves ('dirtybit replicate receive --replica-dir STATE-DIR' there, with
                the VM stopped); only differing blocks are sent. Then 'replicate push' from
                the DR site keeps it current.
failback exec   final cycle from the DR site, then swap roles: the original disk is the primary
                again (shut the DR VM down first).
reprotect       re-establish replication from this side without a full copy: after failback
                exec (original site), or to undo a failover pre that was not executed.
--state-dir is this site's directory of the disk: the sender's state directory at the
original site, the replica directory at the DR site.
`;

function cmd(name: string, summary: string, run: (sub: string, args: string[]) => Promise<number>) {
  return {
    name,
    summary,
    async run(args: string[]): Promise<number> {
      const [sub, ...rest] = args;
      if (!sub || sub === "--help" || sub === "-h" || rest.includes("--help")) {
        console.log(HELP.trim());
        return sub ? 0 : 2;
      }
      return await run(sub, rest);
    },
  } satisfies Command;
}

/** `dirtybit failover pre|exec`. */
export const failoverCommand: Command = cmd(
  "failover",
  "DR failover: pre (final cycle, fence) at the source, exec (promote) at the DR site",
  (sub, args) => {
    if (sub === "pre") return failoverPre(args);
    if (sub === "exec") return failoverExec(args);
    throw new UsageError(`failover: unknown step '${sub}': use pre or exec`);
  },
);

/** `dirtybit failback pre|exec`. */
export const failbackCommand: Command = cmd(
  "failback",
  "DR failback: pre (resync the original primary), exec (final sync, swap roles)",
  (sub, args) => {
    if (sub === "pre") return failbackPre(args);
    if (sub === "exec") return failbackExec(args);
    throw new UsageError(`failback: unknown step '${sub}': use pre or exec`);
  },
);

/** `dirtybit reprotect`. */
export const reprotectCommand: Command = cmd(
  "reprotect",
  "re-establish DR replication from this side without a full copy",
  (sub, args) => reprotect([sub, ...args]),
);

async function failoverPre(args: string[]): Promise<number> {
  const setup = await senderSetup("failover-pre", args, "failover pre");
  const { disk, target } = setup;
  try {
    const role = await loadRole(disk.stateDir, disk.name, "primary");
    checkStep(role, "failover_pre");
    const r = await pushCycle(disk, target, { log, compressLevel: setup.compressLevel });
    const state = (await loadSenderState(disk.stateDir, disk.name))!;
    const image = await imageOf(disk.qmp, disk.node);
    await saveRole(
      disk.stateDir,
      applyStep(role, "failover_pre", {
        seedId: state.seedId,
        cycle: r.cycle,
        ...image,
        node: disk.node,
      }),
    );
    log(
      `${disk.name}: final cycle ${r.cycle} confirmed (${r.stats.dirtyBytes} bytes dirty); fenced: ` +
        `no more cycles from here. Run 'dirtybit failover exec' at the DR site.`,
    );
    return 0;
  } finally {
    await setup.qmp.close();
  }
}

/** The image file and format QEMU opens for `node`. */
async function imageOf(
  qmp: QmpTransport,
  node: string,
): Promise<{ image: string; format: "qcow2" | "raw" }> {
  const nodes = await qmp.execute<{ "node-name": string; file: string; drv: string }[]>(
    "query-named-block-nodes",
    { flat: true },
  );
  const n = nodes.find((x) => x["node-name"] === node);
  if (!n) throw new UsageError(`failover pre: QEMU has no block node ${node}`);
  if (n.drv !== "qcow2" && n.drv !== "raw") {
    throw new UsageError(`failover pre: node ${node} is ${n.drv}: failback supports qcow2 and raw`);
  }
  return { image: n.file, format: n.drv };
}

async function failoverExec(args: string[]): Promise<number> {
  const { extra } = parseParamFlags(args, {
    only: [],
    extra: { name: "string", "replica-dir": "string", memory: "string", cpus: "string" },
  });
  const name = extra.name as string | undefined;
  const dir = extra["replica-dir"] as string | undefined;
  if (!name || !dir) throw new UsageError("failover exec: --name and --replica-dir are required");
  const memoryMiB = Number(extra.memory ?? 1024);
  const cpus = Number(extra.cpus ?? 2);
  if (!Number.isInteger(memoryMiB) || memoryMiB < 64 || !Number.isInteger(cpus) || cpus < 1) {
    throw new UsageError(
      "failover exec: --memory (MiB, >= 64) and --cpus (>= 1) are whole numbers",
    );
  }
  const role = await loadRole(dir, name, "replica");
  checkStep(role, "failover_exec");
  // Opening the store finishes a cycle that a crash left journaled.
  const { store, recovered } = await ReplicaStore.open(dir, { format: "qcow2" });
  for (const r of recovered) log(`${r.name}: ${r.action} the journal of cycle ${r.cycle}`);
  const state = await store.state(name);
  if (!state) throw new UsageError(`failover exec: there is no replica ${name} in ${dir}`);
  if (state.cycle === undefined) {
    throw new ChainError(`failover exec: replica ${name} is still seeding: it is no copy yet`);
  }
  const image = await store.imagePath(name);
  const vm = { name, image, format: state.format, memoryMiB, cpus };
  await Deno.writeTextFile(join(dir, `${name}.qemu.sh`), qemuScript(vm), { mode: 0o755 });
  await Deno.writeTextFile(join(dir, `${name}.xml`), libvirtXml(vm));
  await saveRole(
    dir,
    applyStep(role, "failover_exec", {
      seedId: state.seedId,
      cycle: state.cycle,
      image,
      format: state.format,
    }),
  );
  log(
    `${name}: replica promoted at cycle ${state.cycle}: ${image}; start it with ` +
      `${join(dir, `${name}.qemu.sh`)} or 'virsh define ${join(dir, `${name}.xml`)}'`,
  );
  return 0;
}

async function failbackPre(args: string[]): Promise<number> {
  const setup = await senderSetup("failback-pre", args, "failback pre");
  const { disk, target } = setup;
  try {
    const role = await loadRole(disk.stateDir, disk.name, "replica");
    checkStep(role, "failback_pre");
    const r = await resyncDisk(disk, target, { log, compressLevel: setup.compressLevel });
    await saveRole(disk.stateDir, applyStep(role, "failback_pre", { seedId: r.seedId, cycle: 0 }));
    const s = r.stats;
    log(
      `${disk.name}: original primary resynced: ${s.dirtyBytes} bytes compared, ${s.unchangedBytes} equal, ` +
        `${s.dataBytes} sent as data (${s.payloadBytes} compressed); 'replicate push' keeps it current`,
    );
    return 0;
  } finally {
    await setup.qmp.close();
  }
}

async function failbackExec(args: string[]): Promise<number> {
  const setup = await senderSetup("failback-exec", args, "failback exec");
  const { disk, target } = setup;
  try {
    const role = await loadRole(disk.stateDir, disk.name, "replica");
    checkStep(role, "failback_exec");
    const r = await pushCycle(disk, target, { log, compressLevel: setup.compressLevel });
    const state = (await loadSenderState(disk.stateDir, disk.name))!;
    const remote = await changeRemoteRole(target, "promote", disk.name, state.seedId!, r.cycle);
    await saveRole(
      disk.stateDir,
      applyStep(role, "failback_exec", { seedId: state.seedId, cycle: r.cycle }),
    );
    log(
      `${disk.name}: final cycle ${r.cycle} confirmed; the original site is ${remote}, this side ` +
        `replica/fenced. Start the VM there, then run 'dirtybit reprotect' there.`,
    );
    return 0;
  } finally {
    await setup.qmp.close();
  }
}

async function reprotect(args: string[]): Promise<number> {
  const setup = await senderSetup("reprotect", args, "reprotect");
  const { disk, target } = setup;
  try {
    const role = await loadRole(disk.stateDir, disk.name, "primary");
    checkStep(role, "reprotect");
    const state = await loadSenderState(disk.stateDir, disk.name);
    // Undoing a failover pre: this sender's own seed and last cycle. After a
    // failback: the point the promotion recorded.
    const seedId = role.state === "fenced" ? state?.seedId : role.seedId;
    const cycle = role.state === "fenced" ? state?.confirmedCycle : role.cycle;
    if (seedId === undefined || cycle === undefined) {
      throw new ChainError(`reprotect: disk ${disk.name} has no confirmed cycle here: seed it`);
    }
    const remote = await changeRemoteRole(target, "reprotect", disk.name, seedId, cycle);
    if (role.state === "promoted") {
      if (!role.checkpoint) {
        log(`${disk.name}: no checkpoint bitmap (raw image): the next cycle sends the whole disk`);
      }
      await saveSenderState(disk.stateDir, {
        ...freshState(disk, target),
        seedId,
        confirmedCycle: cycle,
        confirmedAt: new Date().toISOString(),
        ...(role.checkpoint ? { checkpoint: { ...role.checkpoint, node: disk.node } } : {}),
      });
    }
    await saveRole(disk.stateDir, applyStep(role, "reprotect", { seedId, cycle }));
    log(
      `${disk.name}: reprotected at cycle ${cycle}: this side primary/replicating, the other ${remote}; ` +
        `'replicate push' or the daemon sends the cycles`,
    );
    return 0;
  } finally {
    await setup.qmp.close();
  }
}
