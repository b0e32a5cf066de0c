/**
 * Readers for generated configurations, strict about syntax, so tests check
 * them field by field: Proxmox `key: value` conf files and VMX `key = "value"`.
 *
 * @module
 */

/** Parses a Proxmox VM conf (comments `#`, one `key: value` per line, keys unique). */
export function parseProxmoxConf(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const [i, line] of text.split("\n").entries()) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-z][a-z0-9_-]*): (\S.*)$/.exec(line);
    if (!m) throw new Error(`conf line ${i + 1} is not 'key: value': ${line}`);
    if (out.has(m[1])) throw new Error(`conf key ${m[1]} repeated`);
    out.set(m[1], m[2]);
  }
  return out;
}

/** Splits a Proxmox property string `a,b=c,d=e` into a first value and key/values. */
export function parseProperties(value: string): { first: string; props: Map<string, string> } {
  const [first, ...rest] = value.split(",");
  return { first, props: new Map(rest.map((p) => p.split("=", 2) as [string, string])) };
}

/** Parses a .vmx (`key = "value"`, values unescaped from `|XX`). */
export function parseVmx(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const [i, line] of text.split("\n").entries()) {
    if (line === "") continue;
    const m = /^([A-Za-z0-9_.:]+) = "([^"]*)"$/.exec(line);
    if (!m) throw new Error(`vmx line ${i + 1} is not 'key = "value"': ${line}`);
    if (out.has(m[1])) throw new Error(`vmx key ${m[1]} repeated`);
    out.set(
      m[1],
      m[2].replace(/\|([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))),
    );
  }
  return out;
}
