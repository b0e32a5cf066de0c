/**
 * The Bacula 15 of the tests and benchmarks (`make bacula15` builds it into
 * .tools/bacula15) with dirtybit's plugin as a user installs it: a lab
 * directory whose `bin` is the FD's executable directory (a copy of
 * bacula-fd, the backend wrapper as cloudstack_backend, and a `dirtybit`
 * that runs this tree) and whose `plugins` holds the .so built from this
 * tree's parameter table.
 *
 * @module
 */
import { type BaculaInstall, BaculaLab, run } from "./harness.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const BACULA_SRC = `${ROOT}.tools/bacula-15.0.3`;
const PREFIX = `${ROOT}.tools/bacula15`;
const WRAPPER = `${ROOT}lib/bacula/cloudstack_backend.sh`;
const MAIN = `${ROOT}main.ts`;

/** The Bacula 15 build, with the FD started from `binDir` (where its backends are looked for). */
export function bacula15(binDir: string, pluginDir: string): BaculaInstall {
  return {
    sbin: `${PREFIX}/sbin`,
    fd: `${binDir}/bacula-fd`,
    tablesScript: `${PREFIX}/scripts/make_sqlite3_tables`,
    queryFile: `${PREFIX}/scripts/query.sql`,
    pluginDir,
  };
}

/** The files of the Bacula 15 build that are missing (none: it is built). */
export function bacula15Missing(): string[] {
  return BaculaLab.missing(bacula15(`${PREFIX}/sbin`, `${PREFIX}/plugins`));
}

/** A new lab directory with `bin` and `plugins` as described above. */
export async function prepareBacula15(): Promise<{ dir: string; bin: string; plugins: string }> {
  const dir = await Deno.makeTempDir({ prefix: "dirtybit-bacula15-" });
  const bin = `${dir}/bin`;
  const plugins = `${dir}/plugins`;
  await Deno.mkdir(bin);
  await Deno.mkdir(plugins);
  // A copy, not a link: the FD takes its executable directory from its resolved path.
  await Deno.copyFile(`${PREFIX}/sbin/bacula-fd`, `${bin}/bacula-fd`);
  await Deno.chmod(`${bin}/bacula-fd`, 0o755);
  await Deno.copyFile(WRAPPER, `${bin}/cloudstack_backend`);
  await Deno.chmod(`${bin}/cloudstack_backend`, 0o755);
  // The deno running the tests: the FD's PATH has none.
  await Deno.writeTextFile(
    `${bin}/dirtybit`,
    `#!/bin/sh\nexec ${Deno.execPath()} run -A ${MAIN} "$@"\n`,
  );
  await Deno.chmod(`${bin}/dirtybit`, 0o755);
  // Deno fetches npm packages on a first run and says so on stderr, which the FD would report as
  // job errors: fetch them now (a compiled dirtybit has them inside).
  await run(Deno.execPath(), ["cache", MAIN]);
  await run("make", [
    "-s",
    "-C",
    `${ROOT}bacula-plugin`,
    `BACULA_SRC=${BACULA_SRC}`,
    `DENO=${Deno.execPath()}`,
    `OUT=${dir}/build`,
  ]);
  await Deno.copyFile(`${dir}/build/cloudstack-fd.so`, `${plugins}/cloudstack-fd.so`);
  return { dir, bin, plugins };
}
