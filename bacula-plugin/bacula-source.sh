#!/usr/bin/env bash
# Fetches Bacula 15.0.3's source (Debian 13 "trixie"'s `bacula` source package) with apt, using a
# private sources list, state and cache under .tools/ so the system's apt set-up is never touched,
# then configures it. With `--install` it also builds and installs director, storage daemon, file
# daemon and bconsole into .tools/bacula15 (the tests' Bacula). Each step is skipped when its result
# is already there, so a rerun does not rebuild.
# Prints the source tree's path on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=15.0.3
# The real path: a worktree's .tools may be a link to a shared one, and the built daemons keep
# their paths.
mkdir -p .tools
TOOLS=$(realpath .tools)
SRC=$TOOLS/bacula-$VERSION
PREFIX=$TOOLS/bacula15
APT=$TOOLS/apt-trixie
KEYRING=/usr/share/keyrings/debian-archive-trixie-stable.gpg

log() { echo "bacula-source: $*" >&2; }

if [ ! -f "$SRC/configure" ]; then
  mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/src"
  if [ -f "$KEYRING" ]; then
    signed="signed-by=$KEYRING"
  else
    signed="trusted=yes" # an older debian-archive-keyring without trixie's key
  fi
  echo "deb-src [$signed] http://deb.debian.org/debian trixie main" >"$APT/sources.list"
  opts=(-o "Dir::Etc::sourcelist=$APT/sources.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache"
    -o "Dir::State::status=/var/lib/dpkg/status" -o "APT::Get::List-Cleanup=0")
  log "apt-get update (private list $APT/sources.list)"
  apt-get -qq "${opts[@]}" update
  log "apt-get source bacula=$VERSION (trixie)"
  (cd "$APT/src" && apt-get -qq "${opts[@]}" --download-only source "bacula" >&2)
  orig=$(ls "$APT/src"/bacula_"$VERSION"*.orig.tar.gz 2>/dev/null | head -n 1)
  if [ -z "$orig" ]; then
    log "trixie's bacula source package is not $VERSION any more: give BACULA_SRC=DIR instead"
    exit 1
  fi
  tmp=$(mktemp -d "$TOOLS/bacula-unpack.XXXXXX")
  tar -xzf "$orig" -C "$tmp"
  rm -rf "$SRC"
  mv "$tmp"/bacula-* "$SRC"
  rmdir "$tmp"
fi

if [ ! -f "$SRC/config.status" ]; then
  log "configure in $SRC"
  (cd "$SRC" && ./configure -q --prefix="$PREFIX" --sbindir="$PREFIX/sbin" \
    --sysconfdir="$PREFIX/etc" --with-working-dir="$PREFIX/working" \
    --with-pid-dir="$PREFIX/working" --with-plugindir="$PREFIX/plugins" \
    --with-scriptdir="$PREFIX/scripts" --with-logdir="$PREFIX/log" --with-sqlite3 --without-mysql --without-postgresql \
    --disable-bat --disable-conio --enable-readline=no --enable-smartalloc >&2)
fi

if [ "${1:-}" = "--install" ] && [ ! -x "$PREFIX/sbin/bacula-fd" ]; then
  log "make (about 2-5 min)"
  make -s -C "$SRC" -j2 >&2
  make -s -C "$SRC" install >&2
fi
echo "$SRC"
