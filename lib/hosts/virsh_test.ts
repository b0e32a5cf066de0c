import { deepStrictEqual as assertEquals, rejects } from "node:assert/strict";
import type { HostShell } from "./virsh.ts";
import { VirshDomain } from "./virsh.ts";
import type { RemoteResult } from "./ssh.ts";

const UUID = "0e5df38c-c5da-4581-9e3c-68fd92dc0001";

/**
 * A virsh on a fake host: one domain `web` with checkpoints cp1 and cp2;
 * `oldVirsh` does not know `echo --err`. Records each virsh process's argv.
 */
function fakeHost(oldVirsh = false): { shell: HostShell; calls: string[][] } {
  const calls: string[][] = [];
  const answer = (args: string[]): { out?: string; err?: string } => {
    const [cmd, ...rest] = args;
    const dom = rest.find((a) => !a.startsWith("--"));
    if (cmd === "echo") {
      if (rest[0] !== "--err") return { out: `${rest.join(" ")}\n` };
      return oldVirsh
        ? { err: "error: command 'echo' doesn't support option --err\n" }
        : { err: `error: ${rest.slice(1).join(" ")}\n` };
    }
    if (dom !== "web" && dom !== UUID) return { err: `error: failed to get domain '${dom}'\n` };
    switch (cmd) {
      case "dominfo":
        return { out: `Id:             1\nName:           web\nUUID:           ${UUID}\n\n` };
      case "domstate":
        return { out: "running\n\n" };
      case "dumpxml":
        return { out: `<domain>${rest.includes("--inactive") ? "persistent" : "live"}</domain>\n` };
      case "checkpoint-list":
        return { out: "cp1\ncp2\n\n" };
      case "checkpoint-dumpxml":
        return ["cp1", "cp2"].includes(rest[1])
          ? { out: `<domaincheckpoint>\n  <name>${rest[1]}</name>\n</domaincheckpoint>\n` }
          : {
            err: `error: Domain checkpoint not found: no checkpoint with matching name '${
              rest[1]
            }'\n`,
          };
      case "backup-dumpxml":
        return { err: "error: Requested operation is not valid: no domain backup job present\n" };
    }
    return { err: `error: unknown command '${cmd}'\n` };
  };
  const shell: HostShell = {
    run(argv: string[]): Promise<RemoteResult> {
      calls.push(argv);
      const script = argv.slice(3);
      // One argument: a batch in virsh's own syntax ('quoted' words, ' ; ' between commands).
      const commands = script.length === 1 && script[0].includes(" ; ")
        ? script[0].split(" ; ").map((c) =>
          [...c.matchAll(/'((?:[^']|'\\'')*)'|(\S+)/g)].map((m) =>
            m[1] !== undefined ? m[1].replaceAll("'\\''", "'") : m[2]
          )
        )
        : [script];
      let stdout = "";
      let stderr = "";
      let code = 0;
      for (const c of commands) {
        const { out = "", err = "" } = answer(c);
        stdout += out;
        stderr += err;
        code = err ? 1 : 0;
      }
      return Promise.resolve({ code, stdout, stderr });
    },
  };
  return { shell, calls };
}

Deno.test("VirshDomain.open: name, UUID, state and both definitions from one virsh process", async () => {
  const { shell, calls } = fakeHost();
  const dom = await VirshDomain.open(shell, "qemu:///system", "web");
  assertEquals([dom.name, dom.uuid], ["web", UUID]);
  assertEquals(dom.opened, {
    state: "running",
    xml: "<domain>live</domain>\n",
    persistentXml: "<domain>persistent</domain>\n",
  });
  assertEquals(calls.length, 1);
});

Deno.test("VirshDomain.open: an unknown domain is named, from the batch's own error", async () => {
  const { shell } = fakeHost();
  await rejects(
    VirshDomain.open(shell, "qemu:///system", "it's"),
    /domain it's is not defined on qemu:\/\/\/system; list the domains/,
  );
});

Deno.test("VirshDomain: queries asked at once share one virsh process; a failed one is told apart", async () => {
  const { shell, calls } = fakeHost();
  const dom = await VirshDomain.open(shell, "qemu:///system", "web");
  calls.length = 0;
  const [job, checkpoints, state] = await Promise.all([
    dom.backupXml(),
    dom.checkpoints(["cp1", "cp2", "gone"]),
    dom.state(),
  ]);
  assertEquals(job, undefined);
  assertEquals(checkpoints.map((c) => c.name), ["cp1", "cp2"]);
  assertEquals(state, "running");
  assertEquals(calls.length, 1);
});

Deno.test("VirshDomain: checkpoints not expected are read after the list", async () => {
  const { shell, calls } = fakeHost();
  const dom = await VirshDomain.open(shell, "qemu:///system", "web");
  calls.length = 0;
  assertEquals((await dom.checkpoints(["cp1"])).map((c) => c.name), ["cp1", "cp2"]);
  assertEquals(calls.length, 2);
});

Deno.test("VirshDomain: a virsh without echo --err runs each command alone", async () => {
  const { shell, calls } = fakeHost(true);
  const dom = await VirshDomain.open(shell, "qemu:///system", "web");
  assertEquals(dom.opened.state, "running");
  assertEquals(calls.length, 1 + 4);
  calls.length = 0;
  await rejects(dom.capacity("vda"), /virsh domblkinfo failed: unknown command/);
});
