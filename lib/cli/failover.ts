/**
 * `dirtybit failover pre|exec`, `dirtybit failback pre|exec` and
 * `dirtybit reprotect`: flags into requests of the use cases in
 * lib/replication/failover.ts, their messages onto stderr.
 *
 * @module
 */
import type { CliHooks, Command } from "./command.ts";
import { notify, replicaName, senderSetup } from "./replicate.ts";
import { parseParamFlags } from "./args.ts";
import { UsageError } from "../core/errors.ts";
import {
  failbackExec as failbackExecStep,
  failbackPre as failbackPreStep,
  failoverExec as execStep,
  failoverPre as preStep,
  reprotect as reprotectStep,
  type SenderStepRequest,
} from "../replication/failover.ts";

const SENDER_FLAGS =
  "--qmp SOCKET --node NODE --dr HOST:PORT --psk-file F --name NAME --state-dir DIR [--nbd-socket P]";

const STATE_DIR_NOTE =
  `--state-dir is this site's directory of the disk: the sender's state directory at the
original site, the replica directory at the DR site.`;

const FAILOVER_HELP = `
usage: dirtybit failover pre   ${SENDER_FLAGS}          (original site)
       dirtybit failover exec  --name NAME --replica-dir DIR [--force] [--memory MiB] [--cpus N]   (DR site)

failover pre    final replication cycle, then fence the disk: no more cycles from here.
                Shut the VM down first, or what it writes afterwards stays here.
failover exec   promote the replica at the DR site: DIR/NAME.qcow2 becomes the VM's disk;
                writes DIR/NAME.qemu.sh (qemu-system-x86_64) and DIR/NAME.xml (libvirt).
                Needs 'failover pre' at the source first; --force promotes the last
                confirmed cycle when the source site is lost (unplanned failover: the
                output says the RPO, the source fences itself when it returns).
Back to the original site later: 'dirtybit failback --help'.
${STATE_DIR_NOTE}
`;

const FAILBACK_HELP = `
usage: dirtybit failback pre   ${SENDER_FLAGS}          (DR site, toward the original site)
       dirtybit failback exec  ${SENDER_FLAGS}          (DR site)

failback pre    the DR VM's disk (--qmp/--node at the DR site) is compared block by block
                (xxHash64) with the original primary's disk, which a receiver at the original
                site serves ('dirtybit replicate receive --replica-dir STATE-DIR' there, with
                the VM stopped); only differing blocks are sent. What the original disk
                wrote after its last cycle is first kept aside there, in
                STATE-DIR/NAME.divergent-after-cycle-N.qcow2. Then 'replicate push' from
                the DR site keeps it current.
failback exec   final cycle from the DR site, then swap roles: the original disk is the primary
                again (shut the DR VM down first). Then 'dirtybit reprotect' at the original site.
${STATE_DIR_NOTE}
`;

const REPROTECT_HELP = `
usage: dirtybit reprotect      ${SENDER_FLAGS}          (the side that stays primary)

Re-establishes replication from this side without a full copy: after failback exec (at the
original site), or to undo a failover pre that was not executed.
${STATE_DIR_NOTE}
`;

function cmd(
  name: string,
  summary: string,
  help: string,
  run: (sub: string, args: string[], hooks: CliHooks) => Promise<number>,
) {
  return {
    name,
    summary,
    async run(args: string[], hooks: CliHooks = {}): Promise<number> {
      const [sub, ...rest] = args;
      if (!sub || sub === "--help" || sub === "-h" || rest.includes("--help")) {
        console.log(help.trim());
        return sub ? 0 : 2;
      }
      return await run(sub, rest, hooks);
    },
  } satisfies Command;
}

/** `dirtybit failover pre|exec`. */
export const failoverCommand: Command = cmd(
  "failover",
  "DR failover: pre (final cycle, fence) at the source, exec (promote) at the DR site",
  FAILOVER_HELP,
  (sub, args, hooks) => {
    if (sub === "pre") return senderStep("failover-pre", args, "failover pre", preStep, hooks);
    if (sub === "exec") return failoverExec(args, hooks);
    throw new UsageError(`failover: unknown step '${sub}': use pre or exec`);
  },
);

/** `dirtybit failback pre|exec`. */
export const failbackCommand: Command = cmd(
  "failback",
  "DR failback: pre (resync the original primary), exec (final sync, swap roles)",
  FAILBACK_HELP,
  (sub, args, hooks) => {
    if (sub === "pre") {
      return senderStep("failback-pre", args, "failback pre", failbackPreStep, hooks);
    }
    if (sub === "exec") {
      return senderStep("failback-exec", args, "failback exec", failbackExecStep, hooks);
    }
    throw new UsageError(`failback: unknown step '${sub}': use pre or exec`);
  },
);

/** `dirtybit reprotect`. */
export const reprotectCommand: Command = cmd(
  "reprotect",
  "re-establish DR replication from this side without a full copy",
  REPROTECT_HELP,
  (sub, args, hooks) => senderStep("reprotect", [sub, ...args], "reprotect", reprotectStep, hooks),
);

/** Runs a sender-side step with the connection its flags describe. */
async function senderStep(
  sub: string,
  args: string[],
  what: string,
  step: (req: SenderStepRequest) => Promise<unknown>,
  hooks: CliHooks,
): Promise<number> {
  const setup = await senderSetup(sub, args, what);
  try {
    await step({
      disk: setup.disk,
      target: setup.target,
      compressLevel: setup.compressLevel,
      notify,
      onPoint: hooks.onPoint,
    });
    return 0;
  } finally {
    await setup.qmp.close();
  }
}

async function failoverExec(args: string[], hooks: CliHooks): Promise<number> {
  const { params } = parseParamFlags("failover exec", args, {
    only: ["name", "replica_dir", "memory", "cpus", "force"],
  });
  const { name: given, replica_dir: dir } = params;
  if (!given || !dir) throw new UsageError("failover exec: --name and --replica-dir are required");
  const name = replicaName("failover exec", given);
  await execStep({
    name,
    replicaDir: dir,
    memoryMiB: params.memory!,
    cpus: params.cpus!,
    force: params.force === true,
    notify,
    onPoint: hooks.onPoint,
  });
  return 0;
}
