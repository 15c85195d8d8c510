# The environment every end-to-end test starts from (sourced by train_common.bash and
# stages_common.bash; not a test itself: ctest only picks up *.sh): strict bash, the paths ctest
# sets (defaulted for a manual run from the repository root), root-safe Open MPI, no debug or
# crash switch leaking in from the caller, and the helpers fail and setup.
#
# Environment: LF_BIN, LF_SOURCE_DIR, LF_TEST_TMP.
set -euo pipefail

: "${LF_SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${LF_BIN:=$LF_SOURCE_DIR/build/latentforge}"
: "${LF_TEST_TMP:=$LF_SOURCE_DIR/build/test-tmp}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# Debug, crash and pause switches are set per command by the tests that want them.
unset LF_CRASH_AT LF_PAUSE_AT LF_DEBUG_SUM_GRADS LF_DEBUG_RANK_NOISE LF_DEBUG_THROW_AT_STEP LF_DEBUG_THROW_RANK \
  LF_DEBUG_CKPT_DELAY_MS LF_DEBUG_CKPT_FAIL

PY=/usr/bin/python3
MPIRUN=(mpirun -np 2 --oversubscribe --bind-to none)

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# setup NAME: a fresh scratch directory $T for this test.
setup() {
  T="$LF_TEST_TMP/$1"
  rm -rf "$T"
  mkdir -p "$T"
  echo "scratch: $T"
  [[ -x "$LF_BIN" ]] || fail "LF_BIN=$LF_BIN is not an executable (build the latentforge target)"
}
