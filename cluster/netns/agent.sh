#!/usr/bin/env bash
# Open MPI's rsh agent for a test cluster (exec.sh sets --mca plm_rsh_agent to this file):
# called as "agent.sh [ssh options] HOST COMMAND-WORDS...", it runs the command line on HOST
# (its namespace and host name, through exec.sh), as ssh would run it in a remote shell.
while [[ "${1:-}" == -* ]]; do shift; done
[ $# -ge 2 ] || { echo "agent.sh: usage: agent.sh [options] HOST COMMAND..." >&2; exit 2; }
host=$1; shift
exec "$(dirname "${BASH_SOURCE[0]}")/exec.sh" "$host" /bin/sh -c "$*"
