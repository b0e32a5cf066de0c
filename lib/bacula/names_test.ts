import assert from "node:assert/strict";
import {
  backupFileName,
  parseRestoreName,
  recordFileName,
  recordNameAt,
  restoreTargetPath,
} from "./names.ts";
import { parseJobInfo } from "./job_info.ts";
import { InputError } from "../core/errors.ts";

Deno.test("backup file names are distinct per job and parse back under a where prefix", () => {
  assert.equal(
    backupFileName("web01", "disk0", "full", 12),
    "/@cloudstack/web01/disk0/full-12.dbit",
  );
  assert.equal(
    backupFileName("a/b", "d ", "incremental", 3),
    "/@cloudstack/a_b/d/incremental-3.dbit",
  );
  const n = parseRestoreName("/srv/r/@cloudstack/web01/disk0/incremental-13.dbit");
  assert.deepEqual(n, {
    prefix: "/srv/r",
    vm: "web01",
    disk: "disk0",
    level: "incremental",
    jobId: 13,
  });
  assert.equal(restoreTargetPath(n!, "qcow2"), "/srv/r/@cloudstack/web01/disk0.qcow2");
  assert.equal(parseRestoreName("/@cloudstack/web01/disk0/full-1.dbit")?.prefix, "");
  assert.equal(parseRestoreName("/srv/r/@cloudstack/web01/"), null);
  assert.equal(parseRestoreName("/srv/r/other/x.dbit"), null);
  assert.equal(parseRestoreName("/@cloudstack/vm/disk/full.dbit"), null);
});

Deno.test("Job block: case-insensitive keys, empty Where, malformed lines", () => {
  const j = parseJobInfo([
    "Name=R.1",
    "JobID=6",
    "Type=R",
    "Where=",
    "Replace=a",
    "Namespace=@cloudstack",
  ]);
  assert.equal(j.where, "");
  assert.equal(j.type, "R");
  assert.equal(j.level, undefined);
  const b = parseJobInfo(["name=B.1", "jobid=2", "type=B", "level=I", "since=1795676790"]);
  assert.equal(b.since, 1795676790);
  const bad = (lines: string[], msg: string) =>
    assert.throws(
      () => parseJobInfo(lines),
      (e: unknown) => e instanceof InputError && e.message.includes(msg),
    );
  bad(["Name=x", "JobID=1"], "lacks");
  bad(["Name=x", "JobID=one", "Type=B"], "JobID");
  bad(["Name=x", "JobID=1", "Type=Z"], "Type");
  bad(["Name=x", "JobID=1", "Type=B", "Level=V"], "Level");
  bad(["garbage"], "not key=value");
});

Deno.test("replication records: one per job under replication/NAME, found under a where prefix", () => {
  assert.equal(
    recordFileName("vda", "bitmap_push", 7),
    "/@cloudstack/replication/vda/bitmap_push-7.json",
  );
  assert.equal(recordFileName("a/b", "seed", 1), "/@cloudstack/replication/a_b/seed-1.json");
  assert.equal(recordNameAt("/tmp/r/@cloudstack/replication/vda/seed-3.json"), 6);
  assert.equal(recordNameAt("/@cloudstack/replication/vda/seed-3.json"), 0);
  assert.equal(recordNameAt("/@cloudstack/web01/disk0/full-1.dbit"), -1);
  assert.equal(recordNameAt("/@cloudstack/replication/disk0/full-1.dbit"), -1);
  assert.equal(parseRestoreName("/@cloudstack/replication/vda/seed-3.json"), null);
});
