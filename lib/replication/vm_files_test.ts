import assert from "node:assert/strict";
import { libvirtXml, qemuScript } from "./vm_files.ts";

const vm = {
  name: "vda",
  image: "/dr/it's,here.qcow2",
  format: "qcow2" as const,
  memoryMiB: 1024,
  cpus: 2,
};

Deno.test("qemu script quotes the image path (shell and QEMU option commas)", () => {
  const text = qemuScript(vm);
  assert.match(text, /^#!\/bin\/sh/);
  assert.match(text, /exec qemu-system-x86_64/);
  assert.ok(text.includes(`'file=/dr/it'\\''s,,here.qcow2,format=qcow2,if=virtio`), text);
});

Deno.test("libvirt XML escapes names and paths", () => {
  const text = libvirtXml({ ...vm, name: "a<b" });
  assert.match(text, /<name>a&lt;b<\/name>/);
  assert.match(text, /<source file='\/dr\/it&apos;s,here.qcow2'\/>/);
  assert.match(text, /<driver name='qemu' type='qcow2'/);
});
