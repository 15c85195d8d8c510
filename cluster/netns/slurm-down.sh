#!/usr/bin/env bash
# slurm-down.sh DIR -- stop the Slurm that slurm-up.sh started in DIR: cancel its jobs, then
# stop its daemons (SIGTERM, SIGKILL after 10 s) by the pids it recorded. The hosts stay up
# (down.sh CLUSTER removes them and anything still running there). Safe to run twice.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${1:?usage: slurm-down.sh DIR}
CONF=$DIR/etc/slurm.conf
PIDS=$DIR/run/pids
[ -s "$PIDS" ] || { echo "slurm-down.sh: nothing recorded in $PIDS" >&2; exit 0; }
host=$(sed -n 's/^SlurmctldHost=\([^(]*\)(.*/\1/p' "$CONF" 2>/dev/null)
if [ -n "$host" ]; then
  jobs=$("$HERE/exec.sh" "$host" env SLURM_CONF="$CONF" squeue -h -o '%i' 2>/dev/null | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    # shellcheck disable=SC2086
    "$HERE/exec.sh" "$host" env SLURM_CONF="$CONF" scancel $jobs 2>/dev/null
    for _ in $(seq 1 40); do
      [ -z "$("$HERE/exec.sh" "$host" env SLURM_CONF="$CONF" squeue -h -o '%i' 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
fi
# The recorded pid is exec.sh's, which became the daemon (exec): check it still names DIR.
mine() { { tr '\0' ' ' < "/proc/$1/cmdline"; } 2>/dev/null | grep -qF -- "$DIR/"; }
for pid in $(awk '{print $2}' "$PIDS" | tac); do
  mine "$pid" || continue
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 100); do mine "$pid" || break; sleep 0.1; done
  mine "$pid" && kill -KILL "$pid" 2>/dev/null
done
rm -f "$PIDS" "$DIR/munge/munge.sock" "$DIR/munge/munge.sock.lock"
echo "slurm-down.sh: stopped the Slurm in $DIR" >&2
