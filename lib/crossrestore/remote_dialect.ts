/**
 * Command lines for the file operations of a push, in the target host's
 * shell: POSIX `sh` (Proxmox, ESXi's busybox, a Linux staging host) or
 * PowerShell reached through Windows OpenSSH's default `cmd.exe` (Hyper-V).
 * Pure: each function returns the one command line to send.
 *
 * @module
 */
import { shellCommand } from "../hosts/ssh.ts";
import { psQuote } from "./hyperv_script.ts";

/** The file operations a destination needs from the remote shell. */
export interface RemoteDialect {
  readonly name: "posix" | "powershell";
  /** Joins a directory and a name. */
  join(dir: string, name: string): string;
  /** Copies stdin into `path` (created or truncated). */
  receive(path: string): string;
  /** Copies stdin over the start of the existing `path` (a block device), in place. */
  overwrite(path: string): string;
  /** Renames `from` to `to` (same directory). */
  rename(from: string, to: string): string;
  /** Removes files, ignoring missing ones. */
  remove(paths: string[]): string;
  /** Creates a directory and its parents. */
  mkdirp(path: string): string;
  /** Prints the names in `dir`, one per line (nothing when it does not exist). */
  list(dir: string): string;
  /** Copies a file on the host (exit status non-zero when `from` is missing). */
  copy(from: string, to: string): string;
  /** Runs a program with arguments. */
  exec(argv: string[]): string;
}

/** POSIX shell (`sh`, busybox). */
export const posixDialect: RemoteDialect = {
  name: "posix",
  join: (dir, name) => `${dir.replace(/\/+$/, "")}/${name}`,
  receive: (path) => `cat > ${shellCommand([path])}`,
  // A new thin volume (LVM-thin, zvol) reads as zeros: seeking over zero blocks keeps it thin.
  overwrite: (path) =>
    shellCommand([
      "dd",
      `of=${path}`,
      "bs=1M",
      "iflag=fullblock",
      "conv=notrunc,sparse,fsync",
      "status=none",
    ]),
  rename: (from, to) => shellCommand(["mv", "-f", from, to]),
  remove: (paths) => shellCommand(["rm", "-f", ...paths]),
  mkdirp: (path) => shellCommand(["mkdir", "-p", path]),
  list: (dir) => `ls -1A ${shellCommand([dir])} 2>/dev/null || true`,
  copy: (from, to) => shellCommand(["cp", from, to]),
  exec: (argv) => shellCommand(argv),
};

/** Base64 of the UTF-16LE script, as `powershell -EncodedCommand` takes it. */
export function encodePowerShell(script: string): string {
  const bytes = new Uint8Array(script.length * 2);
  for (let i = 0; i < script.length; i++) {
    const c = script.charCodeAt(i);
    bytes[2 * i] = c & 0xff;
    bytes[2 * i + 1] = c >> 8;
  }
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

/**
 * A PowerShell script as one `cmd.exe`-safe command line: the encoded form
 * needs no quoting at all.
 */
export function powershellCommand(script: string): string {
  return `powershell -NoProfile -NonInteractive -EncodedCommand ${
    encodePowerShell(`$ErrorActionPreference = 'Stop'; ${script}`)
  }`;
}

/** Copies standard input into the file stream that `open` (a PowerShell expression) gives. */
function copyStdinTo(open: string): string {
  return powershellCommand(
    `$o = ${open}; try { [Console]::OpenStandardInput().CopyTo($o) } finally { $o.Close() }`,
  );
}

/** PowerShell behind Windows OpenSSH. */
export const powershellDialect: RemoteDialect = {
  name: "powershell",
  join: (dir, name) => `${dir.replace(/[\\/]+$/, "")}\\${name}`,
  receive: (path) => copyStdinTo(`[IO.File]::Create(${psQuote(path)})`),
  overwrite: (path) => copyStdinTo(`[IO.File]::Open(${psQuote(path)}, 'Open', 'Write')`),
  rename: (from, to) =>
    powershellCommand(`Move-Item -Force -LiteralPath ${psQuote(from)} -Destination ${psQuote(to)}`),
  remove: (paths) =>
    powershellCommand(
      paths.map((p) =>
        `Remove-Item -Force -LiteralPath ${psQuote(p)} -ErrorAction SilentlyContinue`
      )
        .join("; "),
    ),
  mkdirp: (path) =>
    powershellCommand(`New-Item -ItemType Directory -Force -Path ${psQuote(path)} | Out-Null`),
  list: (dir) =>
    powershellCommand(
      `if (Test-Path -LiteralPath ${psQuote(dir)}) { Get-ChildItem -Name -LiteralPath ${
        psQuote(dir)
      } }`,
    ),
  copy: (from, to) =>
    powershellCommand(`Copy-Item -LiteralPath ${psQuote(from)} -Destination ${psQuote(to)}`),
  exec: (argv) => powershellCommand(`& ${argv.map(psQuote).join(" ")}`),
};
