import assert from "node:assert/strict";
import {
  isSocketDir,
  leftovers,
  type MountState,
  parseLoops,
  parseMounts,
  parseProbe,
  partitionName,
  readOnlyOptions,
  socketDirFor,
  unmountable,
} from "./mount_plan.ts";

Deno.test("parseMounts unescapes octal fields", () => {
  assert.deepEqual(parseMounts("/dev/loop3p1 /mnt/my\\040dir/p1 ext4 ro,relatime 0 0\n"), [
    { source: "/dev/loop3p1", target: "/mnt/my dir/p1", fstype: "ext4" },
  ]);
});

Deno.test("parseLoops reads NAME and BACK-FILE with escaped spaces", () => {
  assert.deepEqual(parseLoops("/dev/loop0 /m/a\\x20b/.dirtybit-mount/fuse/disk\n/dev/loop1 \n"), [
    { device: "/dev/loop0", backFile: "/m/a b/.dirtybit-mount/fuse/disk" },
    { device: "/dev/loop1", backFile: "" },
  ]);
});

Deno.test("probes: file systems are mounted, the rest skipped with a reason", () => {
  const ext4 = parseProbe("DEVNAME=/dev/loop0p1\nTYPE=ext4\nUSAGE=filesystem\n");
  assert.equal(unmountable(ext4), undefined);
  assert.equal(
    unmountable(parseProbe("TYPE=swap\nUSAGE=other\n")),
    "holds swap, not a file system",
  );
  assert.equal(unmountable(parseProbe("")), "no file system found");
  assert.equal(parseProbe("PTUUID=1\nPTTYPE=dos\n").ptType, "dos");
  assert.equal(readOnlyOptions("ext4"), "ro,noload");
  assert.equal(readOnlyOptions("xfs"), "ro,norecovery");
  assert.equal(readOnlyOptions("vfat"), "ro");
  assert.equal(partitionName("/dev/loop3", "/dev/loop3p12"), "p12");
});

Deno.test("leftovers: only what the record names or its loop devices hold", () => {
  const state: MountState = {
    tool: "dirtybit mount",
    owner: { pid: 1, start: 1 },
    streams: [],
    work: "/m/.dirtybit-mount",
    fuse: "/m/.dirtybit-mount/fuse",
    fuseFile: "/m/.dirtybit-mount/fuse/disk",
    loops: ["/dev/loop2"],
    mounts: ["/m/p1"],
    dirs: ["/m/p1"],
  };
  const mounts = parseMounts([
    "/dev/loop2p1 /m/p1 ext4 ro 0 0",
    "/dev/loop2p2 /elsewhere ext4 ro 0 0",
    "/dev/loop9p1 /m/p9 ext4 ro 0 0",
    "/dev/fuse /m/.dirtybit-mount/fuse fuse rw 0 0",
  ].join("\n"));
  // loop2 was reused for another file after the crash: not ours any more; loop4 is.
  const loops = parseLoops("/dev/loop2 /other/file\n/dev/loop4 /m/.dirtybit-mount/fuse/disk\n");
  assert.deepEqual(leftovers(state, mounts, loops), {
    unmount: ["/m/p1"],
    detach: ["/dev/loop4"],
    fuse: "/m/.dirtybit-mount/fuse",
  });
  assert.deepEqual(leftovers(state, [], []), { unmount: [], detach: [], fuse: undefined });
});

Deno.test("socketDirFor: the first base where the socket path fits, else /tmp", () => {
  assert.equal(socketDirFor(["/run/user/0", "/tmp"], "ab12"), "/run/user/0/dirtybit-mount-ab12");
  const deep = "/" + "d".repeat(100);
  assert.equal(socketDirFor([deep, "/var/tmp"], "ab12"), "/var/tmp/dirtybit-mount-ab12");
  assert.equal(socketDirFor([deep, "relative"], "ab12"), "/tmp/dirtybit-mount-ab12");
  assert.equal(socketDirFor([], "ab12"), "/tmp/dirtybit-mount-ab12");
  assert.ok(isSocketDir("/tmp/dirtybit-mount-ab12"));
  assert.ok(!isSocketDir("/home/me"), "a state file cannot make umount remove another directory");
  assert.ok(!isSocketDir("dirtybit-mount-ab12"));
});
