/**
 * OVF 1.x descriptor (DMTF DSP0243) for an OVA of streamOptimized VMDKs:
 * References, DiskSection, NetworkSection and one VirtualSystem with its
 * OperatingSystemSection and VirtualHardwareSection (CPU, memory, SCSI
 * controller, disks, NICs with the source MACs). Pure.
 *
 * @module
 */
import type { VmDefinition } from "../model/vm_definition.ts";
import {
  diskSlots,
  VIRTUAL_HW_VERSION,
  vmwareGuestIds,
  type VmwareHardware,
} from "./vmware_config.ts";

/** One disk file of the package, same order as `def.disks`. */
export interface OvfDiskFile {
  /** File name inside the OVA. */
  href: string;
  /** Exact size of the file in bytes. */
  fileSize: number;
}

const STREAM_OPTIMIZED =
  "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";
const NIC_SUBTYPE = { e1000: "E1000", e1000e: "E1000e", vmxnet3: "VmxNet3" } as const;
const CONTROLLER_SUBTYPE = {
  lsilogic: "lsilogic",
  lsisas1068: "lsilogicsas",
  pvscsi: "VirtualSCSI",
};

/** Escapes text for XML content and attribute values. */
export function xmlEscape(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;").replaceAll("'", "&apos;");
}

/** A rasd Item; CIM requires its child elements in alphabetical order. */
function item(fields: Record<string, string | number>): string {
  const body = Object.keys(fields).sort().map((k) =>
    `        <rasd:${k}>${xmlEscape(String(fields[k]))}</rasd:${k}>`
  );
  return `      <Item>\n${body.join("\n")}\n      </Item>`;
}

/** The `.ovf` XML text. */
export function ovfDescriptor(def: VmDefinition, hw: VmwareHardware, files: OvfDiskFile[]): string {
  const ids = vmwareGuestIds(def);
  const name = xmlEscape(def.name);
  const refs = files.map((f, i) =>
    `    <File ovf:href="${xmlEscape(f.href)}" ovf:id="file${i + 1}" ovf:size="${f.fileSize}"/>`
  );
  const disks = def.disks.map((d, i) =>
    `    <Disk ovf:capacity="${d.size}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk${
      i + 1
    }" ovf:fileRef="file${i + 1}" ovf:format="${STREAM_OPTIMIZED}"/>`
  );
  let instance = 1;
  const items = [
    item({
      AllocationUnits: "hertz * 10^6",
      Description: "Number of Virtual CPUs",
      ElementName: `${def.cpus} virtual CPU(s)`,
      InstanceID: instance++,
      ResourceType: 3,
      VirtualQuantity: def.cpus,
    }),
    item({
      AllocationUnits: "byte * 2^20",
      Description: "Memory Size",
      ElementName: `${def.memoryMiB}MB of memory`,
      InstanceID: instance++,
      ResourceType: 4,
      VirtualQuantity: def.memoryMiB,
    }),
  ];
  const controllerId = instance++;
  items.push(item({
    Address: 0,
    Description: "SCSI Controller",
    ElementName: "SCSI Controller 0",
    InstanceID: controllerId,
    ResourceSubType: CONTROLLER_SUBTYPE[hw.controller],
    ResourceType: 6,
  }));
  for (const [slot, i] of diskSlots(def)) {
    items.push(item({
      AddressOnParent: slot,
      ElementName: `Hard Disk ${i + 1}`,
      HostResource: `ovf:/disk/vmdisk${i + 1}`,
      InstanceID: instance++,
      Parent: controllerId,
      ResourceType: 17,
    }));
  }
  def.nics.forEach((n, i) => {
    items.push(item({
      Address: n.mac,
      AddressOnParent: i + 7,
      AutomaticAllocation: "true",
      Connection: hw.network,
      Description: `${NIC_SUBTYPE[hw.nic]} ethernet adapter on "${hw.network}"`,
      ElementName: `Network adapter ${i + 1}`,
      InstanceID: instance++,
      ResourceSubType: NIC_SUBTYPE[hw.nic],
      ResourceType: 10,
    }));
  });
  const firmware = def.firmware === "uefi" ? "efi" : "bios";
  return `<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
${refs.join("\n")}
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
${disks.join("\n")}
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="${xmlEscape(hw.network)}">
      <Description>The ${xmlEscape(hw.network)} network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="${name}">
    <Info>A virtual machine restored by dirtybit</Info>
    <Name>${name}</Name>
    <OperatingSystemSection ovf:id="${ids.cimId}" vmw:osType="${ids.ovfOsType}">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>${name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-${VIRTUAL_HW_VERSION}</vssd:VirtualSystemType>
      </System>
${items.join("\n")}
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="${firmware}"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
`;
}
