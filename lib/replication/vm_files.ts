/**
 * What `failover exec` writes beside a promoted replica so the VM can be
 * started at the DR site without CloudStack: a `qemu-system-x86_64` command
 * line (a shell script) and a libvirt domain XML. Pure text builders.
 *
 * @module
 */
import { shellQuote } from "../hosts/ssh.ts";

/** The VM to start on a promoted image. */
export interface PromotedVm {
  name: string;
  image: string;
  format: "qcow2" | "raw";
  memoryMiB: number;
  cpus: number;
}

/** A POSIX shell script that starts the VM with qemu-system-x86_64 (KVM if present, else TCG). */
export function qemuScript(vm: PromotedVm): string {
  const args = [
    "qemu-system-x86_64",
    "-name",
    vm.name,
    "-machine",
    "q35,accel=kvm:tcg",
    "-cpu",
    "max",
    "-m",
    String(vm.memoryMiB),
    "-smp",
    String(vm.cpus),
    "-drive",
    `file=${vm.image.replaceAll(",", ",,")},format=${vm.format},if=virtio,cache=none,discard=unmap`,
    "-nic",
    "user,model=virtio-net-pci",
    "-display",
    "none",
    "-serial",
    "mon:stdio",
  ];
  return [
    "#!/bin/sh",
    `# Promoted replica ${vm.name}: written by 'dirtybit failover exec'. Adjust network and size.`,
    `exec ${args.map(shellQuote).join(" \\\n  ")}`,
    "",
  ].join("\n");
}

/** A libvirt domain (`virsh define FILE`, then `virsh start NAME`). */
export function libvirtXml(vm: PromotedVm): string {
  return `<domain type='kvm'>
  <name>${xml(vm.name)}</name>
  <memory unit='MiB'>${vm.memoryMiB}</memory>
  <vcpu>${vm.cpus}</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features><acpi/><apic/></features>
  <cpu mode='host-passthrough'/>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='${vm.format}' cache='none' discard='unmap'/>
      <source file='${xml(vm.image)}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'/>
    <console type='pty'/>
  </devices>
</domain>
`;
}

function xml(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")
    .replaceAll("'", "&apos;").replaceAll('"', "&quot;");
}
