import { deepStrictEqual as assertEquals } from "node:assert/strict";
import type { ShellProcess } from "./ssh.ts";
import { VirshSession } from "./virsh_session.ts";
import { LocalShell, VirshDomain } from "./virsh.ts";

/** virsh's words of one input line (sh-style quotes, `;` between commands). */
function parseLine(line: string): string[][] | undefined {
  const commands: string[][] = [[]];
  for (const m of line.matchAll(/(;)|((?:'[^']*'|\\.|[^\s';\\])+)/g)) {
    if (m[1]) commands.push([]);
    else commands.at(-1)!.push(m[2].replace(/'([^']*)'|\\(.)/g, "$1$2"));
  }
  return commands.filter((c) => c.length > 0);
}

/**
 * An interactive virsh as seen through pipes: the prompt and the echoed
 * input line on stdout, `echo` without a newline, a line with an unknown
 * command refused whole. `answer` gives the other commands' output.
 */
function fakeVirsh(
  answer: (args: string[]) => { out?: string; err?: string } | "hang" | "die",
): ShellProcess & { killed: () => boolean } {
  const enc = new TextEncoder();
  let killed = false;
  const out = new TransformStream<Uint8Array, Uint8Array>();
  const err = new TransformStream<Uint8Array, Uint8Array>();
  const stdout = out.writable.getWriter();
  const stderr = err.writable.getWriter();
  const input = new TransformStream<Uint8Array, Uint8Array>();
  const status = (async () => {
    const dec = new TextDecoder();
    let buffered = "";
    try {
      for await (const chunk of input.readable) {
        buffered += dec.decode(chunk, { stream: true });
        let nl;
        while ((nl = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          await stdout.write(enc.encode(`virsh # ${line}\n`));
          const commands = parseLine(line)!;
          const unknown = commands.find((c) => c[0] === "nosuch");
          if (unknown) {
            await stderr.write(enc.encode(`error: unknown command: '${unknown[0]}'\n`));
            continue;
          }
          for (const [cmd, ...rest] of commands) {
            if (cmd === "echo" && rest[0] === "--err") {
              await stderr.write(enc.encode(`error: ${rest.slice(1).join(" ")}\n`));
            } else if (cmd === "echo") {
              await stdout.write(enc.encode(rest.join(" ")));
            } else {
              const a = answer([cmd, ...rest]);
              if (a === "hang") return;
              if (a === "die") throw new Error("died");
              if (a.out) await stdout.write(enc.encode(a.out));
              if (a.err) await stderr.write(enc.encode(a.err));
            }
          }
        }
      }
    } catch {
      /* died */
    } finally {
      await stdout.close().catch(() => {});
      await stderr.close().catch(() => {});
    }
  })();
  return {
    stdin: input.writable,
    stdout: out.readable,
    stderr: err.readable,
    status,
    kill: () => {
      killed = true;
      stdout.close().catch(() => {});
      stderr.close().catch(() => {});
    },
    killed: () => killed,
  };
}

const answers = (args: string[]) => {
  if (args[0] === "domstate") {
    return args[1] === "web"
      ? { out: "running\n\n" }
      : { err: "error: failed to get domain 'x'\n" };
  }
  if (args[0] === "uri") return { out: "qemu:///system\n" };
  if (args[0] === "hang") return "hang" as const;
  if (args[0] === "die") return "die" as const;
  return { out: `${args.join(" ")}\n` };
};

Deno.test("VirshSession: each command's output and error apart, prompts and echoed input left out", async () => {
  const session = new VirshSession(fakeVirsh(answers));
  assertEquals(
    await session.run([["domstate", "web"], ["domstate", "gone"], ["uri"], ["it's", "a b"]], 5000),
    [
      { stdout: "running\n\n" },
      { stdout: "", error: "failed to get domain 'x'" },
      { stdout: "qemu:///system\n" },
      { stdout: "it's a b\n" },
    ],
  );
  assertEquals(await session.run([["uri"]], 5000), [{ stdout: "qemu:///system\n" }]);
  await session.close();
});

Deno.test("VirshSession: a command virsh cannot parse fails alone", async () => {
  const session = new VirshSession(fakeVirsh(answers));
  assertEquals(await session.run([["uri"], ["nosuch", "x"], ["domstate", "web"]], 5000), [
    { stdout: "qemu:///system\n" },
    { stdout: "", error: "unknown command: 'nosuch'" },
    { stdout: "running\n\n" },
  ]);
  assertEquals(session.broken, false);
  await session.close();
});

Deno.test("VirshSession: a virsh that dies or does not answer in time breaks the session", async () => {
  const dying = fakeVirsh(answers);
  const session = new VirshSession(dying);
  assertEquals(await session.run([["die"]], 5000), undefined);
  assertEquals([session.broken, dying.killed()], [true, true]);
  assertEquals(await session.run([["uri"]], 5000), undefined);
  await session.close();

  const hanging = fakeVirsh(answers);
  const slow = new VirshSession(hanging);
  assertEquals(await slow.run([["hang"]], 100), undefined);
  assertEquals([slow.broken, hanging.killed()], [true, true]);
  await slow.close();
});

Deno.test("VirshSession: an argument with a line break is not sent; the session goes on", async () => {
  const session = new VirshSession(fakeVirsh(answers));
  assertEquals(await session.run([["define", "a\nb"]], 5000), undefined);
  assertEquals(session.broken, false);
  assertEquals(await session.run([["uri"]], 5000), [{ stdout: "qemu:///system\n" }]);
  await session.close();
});

Deno.test("VirshDomain: a job's session runs every command in one virsh process", async () => {
  const uuid = "0e5df38c-c5da-4581-9e3c-68fd92dc0001";
  const runs: string[][] = [];
  const spawned: string[][] = [];
  const shell = {
    run: (argv: string[]) => {
      runs.push(argv);
      return new LocalShell().run(["false"]);
    },
    spawn: (argv: string[]) => {
      spawned.push(argv);
      return fakeVirsh((args) => {
        if (args[0] === "dominfo") return { out: `Name:  web\nUUID:  ${uuid}\n\n` };
        if (args[0] === "domstate") return { out: "running\n\n" };
        if (args[0] === "backup-dumpxml") return { err: "error: no domain backup job present\n" };
        return { out: `<${args[0]}/>\n` };
      });
    },
  };
  const dom = await VirshDomain.open(shell, "qemu:///system", "web", { session: true });
  assertEquals([dom.uuid, dom.opened.state, dom.opened.xml], [uuid, "running", "<dumpxml/>\n"]);
  assertEquals(await Promise.all([dom.state(), dom.backupXml()]), ["running", undefined]);
  assertEquals(await dom.run(["domjobabort", uuid]), "<domjobabort/>\n");
  await dom.close();
  assertEquals([spawned, runs], [[["virsh", "-q", "-c", "qemu:///system"]], []]);
});
