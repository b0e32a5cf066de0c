#!/bin/sh
# The backend executable the cloudstack-fd.so plugin starts: FD_EXE_DIR/cloudstack_backend
# (no arguments; stdin, stdout and stderr are pipes to the FD). It runs the `dirtybit` in its
# own directory, never one found on the FD's PATH: install the binary there or make it a
# symlink to the installed one.
# Bacula cancels a backend with SIGUSR1, but Deno >= 2.9.2 answers SIGUSR1 by starting its
# inspector on 127.0.0.1:9229 and printing a banner on stderr (a job error for the FD). So this
# wrapper takes the SIGUSR1 and hands dirtybit a SIGTERM instead.
# Arguments, when given, replace the command (tests run the backend from a source tree).
if [ $# -eq 0 ]; then
  dirtybit="${0%/*}/dirtybit"
  if [ ! -x "$dirtybit" ]; then
    # Answer the plugin's Hello (an 8-byte header: letter, 6-digit length, newline; then the
    # text) with a PTCOMM abort packet, which fails the job with this message. Reading the
    # Hello first keeps the plugin from writing into a closed pipe; the rest is drained
    # until the plugin lets go.
    header=$(dd bs=1 count=8 2>/dev/null)
    dd bs=1 count="$(expr "$(printf '%s' "$header" | cut -c2-7)" + 0)" >/dev/null 2>&1
    msg="cloudstack_backend: no dirtybit at $dirtybit: install the dirtybit binary there (or a symlink to it), see docs/bacula.md"
    printf 'A%06d\n%s' "${#msg}" "$msg"
    timeout 10 cat >/dev/null
    exit 1
  fi
  set -- "$dirtybit" backend
fi
# An asynchronous command's stdin would be /dev/null: hand it the FD's pipe through fd 3.
exec 3<&0
"$@" <&3 3<&- &
child=$!
exec 3<&-
trap 'kill -TERM "$child" 2>/dev/null' USR1
trap 'kill -TERM "$child" 2>/dev/null' TERM
while :; do
  wait "$child"
  status=$?
  kill -0 "$child" 2>/dev/null || exit "$status"
done
