import assert from "node:assert/strict";
import { encodePowerShell, posixDialect, powershellDialect } from "./remote_dialect.ts";

function decodePowerShell(cmd: string): string {
  const b64 = cmd.split(" ").at(-1)!;
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new TextDecoder("utf-16le").decode(bytes);
}

Deno.test("posix dialect quotes paths for sh", () => {
  assert.equal(posixDialect.receive("/a b/x.partial"), "cat > '/a b/x.partial'");
  assert.equal(posixDialect.rename("/x.partial", "/x"), "mv -f /x.partial /x");
  assert.equal(
    posixDialect.overwrite("/dev/pve/vm-100-disk-0"),
    "dd of=/dev/pve/vm-100-disk-0 bs=1M iflag=fullblock conv=notrunc,sparse,fsync status=none",
  );
  assert.equal(posixDialect.join("/vmfs/volumes/ds1/", "vm"), "/vmfs/volumes/ds1/vm");
  assert.equal(posixDialect.exec(["qm", "config", "100"]), "qm config 100");
});

Deno.test("powershell dialect: encoded commands, Windows joins, single-quoted paths", () => {
  assert.equal(decodePowerShell(`x ${encodePowerShell("Ünïcode ✓")}`), "Ünïcode ✓");
  assert.equal(powershellDialect.join("D:/VMs/", "web01"), "D:/VMs\\web01");
  const receive = powershellDialect.receive("D:\\VMs\\it's.vhdx.partial");
  assert.match(receive, /^powershell -NoProfile -NonInteractive -EncodedCommand [A-Za-z0-9+/=]+$/);
  const script = decodePowerShell(receive);
  assert.match(script, /^\$ErrorActionPreference = 'Stop'; /);
  assert.match(script, /\[IO\.File\]::Create\('D:\\VMs\\it''s\.vhdx\.partial'\)/);
  assert.match(script, /OpenStandardInput\(\)\.CopyTo\(\$o\)/);
  assert.match(
    decodePowerShell(powershellDialect.overwrite("\\\\.\\PhysicalDrive2")),
    /\[IO\.File\]::Open\('\\\\\.\\PhysicalDrive2', 'Open', 'Write'\)/,
  );
  assert.match(
    decodePowerShell(powershellDialect.rename("a.partial", "a")),
    /Move-Item -Force -LiteralPath 'a\.partial' -Destination 'a'/,
  );
  assert.match(
    decodePowerShell(powershellDialect.exec(["D:\\VMs\\create.ps1"])),
    /& 'D:\\VMs\\create\.ps1'$/,
  );
});
