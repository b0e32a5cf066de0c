/**
 * The PowerShell script that creates the restored VM on a Hyper-V host
 * (`New-VM` with the pushed VHDX files). Hyper-V has no documented text or
 * XML import format, so the script is the VM definition (docs/cross-restore.md, Hyper-V).
 * Generation follows the source firmware: BIOS -> 1, UEFI -> 2. The script
 * finds the disks beside itself (`$PSScriptRoot`), so a staged folder can be
 * copied anywhere before it runs. Pure.
 *
 * @module
 */
import type { VmDefinition } from "../model/vm_definition.ts";

/** Where the VM lives on the Hyper-V host. */
export interface HypervLayout {
  /** VHDX file names beside the script, same order as `def.disks`. */
  vhdxFiles: string[];
  /** Virtual switch every NIC joins. */
  switchName: string;
}

/** A PowerShell single-quoted string literal. */
export function psQuote(s: string): string {
  return `'${s.replaceAll("'", "''")}'`;
}

/** Hyper-V generation for the definition. */
export function hypervGeneration(def: VmDefinition): 1 | 2 {
  return def.firmware === "uefi" ? 2 : 1;
}

/** `0200AB...`: Hyper-V's MAC notation. */
function hypervMac(mac: string): string {
  return mac.replaceAll(":", "").toUpperCase();
}

/** The script text (stops on the first error; refuses to replace an existing VM). */
export function hypervScript(def: VmDefinition, layout: HypervLayout): string {
  const gen = hypervGeneration(def);
  const vm = psQuote(def.name);
  const bootIndex = def.disks.findIndex((d) => d.boot);
  const paths = layout.vhdxFiles.map((f) => `(Join-Path $PSScriptRoot ${psQuote(f)})`);
  const lines = [
    `# Creates VM ${def.name.replace(/[\r\n]/g, " ")} restored by dirtybit (Generation ${gen}).`,
    "$ErrorActionPreference = 'Stop'",
    `if (Get-VM -Name ${vm} -ErrorAction SilentlyContinue) { throw "VM ${
      def.name.replace(/["`$]/g, "")
    } already exists" }`,
    `New-VM -Name ${vm} -Generation ${gen} -MemoryStartupBytes ${def.memoryMiB}MB -VHDPath ${
      paths[bootIndex]
    } -Path $PSScriptRoot -SwitchName ${psQuote(layout.switchName)}${
      gen === 1 ? " -BootDevice IDE" : ""
    } | Out-Null`,
    `Set-VMProcessor -VMName ${vm} -Count ${def.cpus}`,
    `Set-VMMemory -VMName ${vm} -DynamicMemoryEnabled $false`,
  ];
  def.disks.forEach((_, i) => {
    if (i !== bootIndex) {
      lines.push(`Add-VMHardDiskDrive -VMName ${vm} -ControllerType SCSI -Path ${paths[i]}`);
    }
  });
  if (gen === 2) {
    lines.push(
      def.osFamily === "linux"
        ? `Set-VMFirmware -VMName ${vm} -EnableSecureBoot On -SecureBootTemplate MicrosoftUEFICertificateAuthority`
        : `Set-VMFirmware -VMName ${vm} -EnableSecureBoot On -SecureBootTemplate MicrosoftWindows`,
      `Set-VMFirmware -VMName ${vm} -FirstBootDevice (Get-VMHardDiskDrive -VMName ${vm} | Where-Object Path -eq ${
        paths[bootIndex]
      })`,
    );
  }
  if (def.nics.length === 0) {
    lines.push(`Get-VMNetworkAdapter -VMName ${vm} | Remove-VMNetworkAdapter`);
  }
  def.nics.forEach((n, i) => {
    if (i > 0) {
      lines.push(
        `Add-VMNetworkAdapter -VMName ${vm} -Name ${psQuote(`nic${i}`)} -SwitchName ${
          psQuote(layout.switchName)
        }`,
      );
    }
    const select = i === 0
      ? `(Get-VMNetworkAdapter -VMName ${vm} | Select-Object -First 1)`
      : `(Get-VMNetworkAdapter -VMName ${vm} -Name ${psQuote(`nic${i}`)})`;
    lines.push(
      `Set-VMNetworkAdapter -VMNetworkAdapter ${select} -StaticMacAddress ${
        psQuote(hypervMac(n.mac))
      }`,
    );
  });
  lines.push(`Write-Output "created VM ${def.name.replace(/["`$]/g, "")} (Generation ${gen})"`);
  return lines.join("\r\n") + "\r\n";
}
