#!/usr/bin/env bash
# The DiT with the flow objective keeps the trainer's guarantees (docs/design.md, invariants
# 1-3): in float64, 2 ranks x B/2 equal 1 rank x B (parameters, AdamW moments, EMA), with a
# negative control (per-rank noise) that must differ; a run stopped by SIGUSR1 and resumed is
# bitwise the run never stopped; `sample` integrates it with Euler and Heun, and refuses a DDPM
# sampler for a flow model (exit 2, naming the samplers that fit).
source "$(dirname "${BASH_SOURCE[0]}")/train_common.bash"
setup train_dit_flow
make_cache --data.limit=28

# A tiny DiT on the 1x32x32 pixel "latents" (patch 4: 64 tokens), logit-normal flow times.
DIT=(--model.kind=dit --model.patch_size=4 --model.depth=2 --model.width=32 --model.heads=2
     --diffusion.objective=flow --diffusion.t_sampling=logit_normal --train.grad_clip=0)
F=(--train.precision=f64 --train.steps=4 --train.ckpt_every=4)
TOL=(--atol=1e-13 --rtol=1e-9)

echo "== f64: 1 rank vs 2 ranks"
run_ok "$T/w1" "1 rank" "${DIT[@]}" "${F[@]}"
grep -q "model: DiT .* flow objective" "$T/w1.log" || fail "the run did not build a DiT with the flow objective"
run_np2_ok "$T/w2" "2 ranks" "${DIT[@]}" "${F[@]}"
same_checkpoints "$(ckpt "$T/w1" 4)" "$(ckpt "$T/w2" 4)" "${TOL[@]}"
echo "== negative control: LF_DEBUG_RANK_NOISE=1 must differ"
LF_DEBUG_RANK_NOISE=1 run_np2_ok "$T/noise" "2 ranks, per-rank draws" "${DIT[@]}" "${F[@]}"
different_checkpoints "$(ckpt "$T/w1" 4)" "$(ckpt "$T/noise" 4)" "${TOL[@]}"

echo "== SIGUSR1 after step 3 of 6, resumed: bitwise the uninterrupted run"
run_ok "$T/ref" "uninterrupted" "${DIT[@]}" --train.steps=6
LF_PAUSE_AT=loop.step_end:3 "$LF_BIN" train --cache.dir="$CACHE" "${TRAIN_FLAGS[@]}" --train.run_dir="$T/sig" \
  "${DIT[@]}" --train.steps=6 >"$T/sig.log" 2>&1 &
pid=$!
wait_stopped "$pid" "$T/sig.log"
kill -USR1 "$pid"; kill -CONT "$pid"
RC=0; wait "$pid" || RC=$?
expect_rc 75 "$T/sig" "the run stopped by SIGUSR1"
run_ok "$T/sig" "resumed" "${DIT[@]}" --train.steps=6 --resume auto
same_checkpoints "$(ckpt "$T/ref" 6)" "$(ckpt "$T/sig" 6)" --exact

echo "== sample: euler and heun run; ddim is refused for a flow model"
for s in euler heun; do
  "$LF_BIN" sample --sample.checkpoint="$T/ref" --sample.sampler=$s --sample.steps=4 --sample.num=6 \
    --sample.out_dir="$T/samples_$s" --threads=1 >"$T/sample_$s.log" 2>&1 || { cat "$T/sample_$s.log"; fail "sample with $s failed"; }
  [ -f "$T/samples_$s/samples.h5" ] || fail "no samples.h5 from $s"
done
RC=0
"$LF_BIN" sample --sample.checkpoint="$T/ref" --sample.sampler=ddim --sample.num=2 --sample.out_dir="$T/bad" \
  --threads=1 >"$T/bad.log" 2>&1 || RC=$?
expect_rc 2 "$T/bad" "sample.sampler = ddim on a flow model"
grep -q "sample.sampler = ddim cannot sample a model trained with diffusion.objective = flow.*use sample.sampler = euler or heun" \
  "$T/bad.log" || { cat "$T/bad.log"; fail "the mismatch message does not name the samplers that fit"; }

echo "== a DDPM key with the flow objective is refused before any work (exit 2)"
train "$T/refused" "${DIT[@]}" --diffusion.prediction=v --train.steps=1
expect_rc 2 "$T/refused" "diffusion.prediction = v with diffusion.objective = flow"
grep -q "diffusion.prediction = v does not apply to diffusion.objective = flow" "$T/refused.log" \
  || { cat "$T/refused.log"; fail "the refusal does not name the key and the objective"; }
echo "PASS"
