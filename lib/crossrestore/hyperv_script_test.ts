import assert from "node:assert/strict";
import { linuxVm, windowsVm } from "../../tests/crossrestore/sample.ts";
import { hypervGeneration, hypervScript, psQuote } from "./hyperv_script.ts";

Deno.test("hypervScript: Generation 1 for BIOS, IDE boot disk, data disk on SCSI, NICs, CPUs", () => {
  const s = hypervScript(linuxVm, {
    vhdxFiles: ["web01-disk0.vhdx", "web01-disk1.vhdx"],
    switchName: "External",
  });
  const lines = s.split("\r\n");
  assert.equal(lines[1], "$ErrorActionPreference = 'Stop'");
  assert.ok(lines.some((l) => l.startsWith("if (Get-VM -Name 'web01'")), "refuses an existing VM");
  assert.ok(lines.includes(
    "New-VM -Name 'web01' -Generation 1 -MemoryStartupBytes 2048MB -VHDPath (Join-Path $PSScriptRoot " +
      "'web01-disk0.vhdx') -Path $PSScriptRoot -SwitchName 'External' -BootDevice IDE | Out-Null",
  ));
  assert.ok(lines.includes("Set-VMProcessor -VMName 'web01' -Count 2"));
  assert.ok(lines.includes(
    "Add-VMHardDiskDrive -VMName 'web01' -ControllerType SCSI -Path (Join-Path $PSScriptRoot 'web01-disk1.vhdx')",
  ));
  assert.ok(lines.some((l) => l.includes("-StaticMacAddress '02004C5E0001'")));
  assert.ok(
    lines.includes("Add-VMNetworkAdapter -VMName 'web01' -Name 'nic1' -SwitchName 'External'"),
  );
  assert.ok(lines.some((l) => l.includes("-Name 'nic1') -StaticMacAddress '1E00AABBCC02'")));
  assert.ok(!s.includes("Set-VMFirmware"), "no firmware settings on Generation 1");
});

Deno.test("hypervScript: Generation 2 for UEFI with the Secure Boot template by OS; quoting", () => {
  assert.equal(hypervGeneration(windowsVm), 2);
  const s = hypervScript(windowsVm, {
    vhdxFiles: ["sql-disk0.vhdx"],
    switchName: "Default Switch",
  });
  assert.match(s, /New-VM -Name 'sql ''prod''' -Generation 2 -MemoryStartupBytes 8192MB /);
  assert.ok(!s.includes("-BootDevice"));
  assert.match(s, /-SecureBootTemplate MicrosoftWindows\r\n/);
  assert.match(
    s,
    /-FirstBootDevice \(Get-VMHardDiskDrive -VMName 'sql ''prod''' \| Where-Object Path -eq/,
  );
  const linux = hypervScript({ ...linuxVm, firmware: "uefi" }, {
    vhdxFiles: ["a", "b"],
    switchName: "s",
  });
  assert.match(linux, /-SecureBootTemplate MicrosoftUEFICertificateAuthority/);
  assert.equal(psQuote("it's"), "'it''s'");
});
