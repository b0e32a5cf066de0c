#!/bin/sh
# The backend executable a Bacula metaplugin .so starts (no arguments, stdin/stdout/stderr
# are pipes to the FD). Bacula cancels a backend with SIGUSR1, but Deno >= 2.9.2 answers
# SIGUSR1 by starting its inspector on 127.0.0.1:9229 and printing a banner on stderr (a job
# error for the FD). So this wrapper takes the SIGUSR1 and hands dirtybit a SIGTERM instead.
# Arguments, when given, replace the command (tests run the backend from a source tree).
[ $# -gt 0 ] || set -- dirtybit backend
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
