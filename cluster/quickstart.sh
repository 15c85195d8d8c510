#!/usr/bin/env bash
# The Fashion-MNIST quickstart: vae train -> encode (train and test splits) -> train -> sample
# -> eval, on Debian's dataset-fashion-mnist, with the settings of configs/fmnist-quick.ini
# (or the INI given as $1). Prints each stage's wall time and where the grid and metrics are.
#
#   bash cluster/quickstart.sh [configs/fmnist.ini] [--section.key=value ...]
#
# Variables: LF_BIN (default build/latentforge), LF_RANKS (default 2: mpirun -np 2 x 1 thread),
# LF_RUN (default runs/quick: where everything goes; must match the INI's paths).
# The evaluation classifier is trained once (not counted in the pipeline's time) and reused.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=configs/fmnist-quick.ini
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then CONFIG=$1; shift; fi
EXTRA=("$@")
BIN=${LF_BIN:-build/latentforge}
RANKS=${LF_RANKS:-2}
[ -x "$BIN" ] || { echo "quickstart: $BIN not found; build first (bash cluster/build.sh)" >&2; exit 2; }
RUN=$(sed -n 's/^run_dir *= *\(.*\)\/ldm *$/\1/p' "$CONFIG" | head -1)
RUN=${RUN:-runs/quick}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
threads=$(( $(nproc) / RANKS )); [ "$threads" -ge 1 ] || threads=1
par() {  # par SUBCOMMAND... : the subcommand on RANKS ranks (1 thread each) or one process
  if [ "$RANKS" -gt 1 ]; then
    mpirun --oversubscribe --bind-to none -np "$RANKS" "$BIN" "$@" --config "$CONFIG" --threads "$threads" "${EXTRA[@]}"
  else
    "$BIN" "$@" --config "$CONFIG" "${EXTRA[@]}"
  fi
}
one() { "$BIN" "$@" --config "$CONFIG" "${EXTRA[@]}"; }
declare -A T
stage() {  # stage NAME COMMAND...
  local name=$1; shift
  echo "== quickstart: $name"
  local t0=$SECONDS
  "$@"
  T[$name]=$((SECONDS - t0))
  echo "== quickstart: $name took ${T[$name]} s"
}
CLASSIFIER=$(sed -n 's/^classifier *= *//p' "$CONFIG" | head -1)
if [ -n "$CLASSIFIER" ] && [ ! -f "$CLASSIFIER" ]; then
  echo "== quickstart: training the evaluation classifier once ($CLASSIFIER; not counted)"
  one eval train-classifier
fi
# A text model samples the test split's captions (configs/emoji.ini: sample.prompt_file), one
# sample per held-out image, so eval can tell whether each lands in its caption's category.
PROMPTS=$(sed -n 's/^prompt_file *= *//p' "$CONFIG" | head -1)
TEST_SOURCE=$(sed -n 's/^test_source *= *//p' "$CONFIG" | head -1)
if [ -n "$PROMPTS" ] && [ -f "$TEST_SOURCE/metadata.jsonl" ]; then
  mkdir -p "$(dirname "$PROMPTS")"
  /usr/bin/python3 -c 'import json, sys; print("\n".join(json.loads(l)["text"] for l in open(sys.argv[1], encoding="utf-8")))' \
    "$TEST_SOURCE/metadata.jsonl" >"$PROMPTS"
  echo "== quickstart: $(wc -l <"$PROMPTS") held-out captions in $PROMPTS"
fi
START=$SECONDS
stage "vae train" par vae train --resume auto
stage "encode train" par encode
stage "encode test" par encode --data.split=test --cache.dir="$RUN/cache/test"
stage "train" par train --resume auto
stage "sample" par sample
stage "eval" par eval
TOTAL=$((SECONDS - START))
echo
echo "quickstart done in ${TOTAL} s (vae ${T[vae train]} s, encode $((T[encode train] + T[encode test])) s, train ${T[train]} s, sample ${T[sample]} s, eval ${T[eval]} s)"
echo "  sample grid:  $RUN/ldm/samples/grid.png"
echo "  metrics:      $RUN/ldm/samples/metrics.json"
echo "  VAE:          $RUN/vae/vae (reconstructions: $RUN/vae/reconstructions.png)"
echo "  loss curves:  /usr/bin/python3 tools/plot_metrics.py $RUN/ldm/metrics.jsonl"
