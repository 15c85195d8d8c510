#!/usr/bin/env bash
# `vae train` keeps the trainer's guarantees: in float64, 2 ranks x B/2 equal 1 rank x B
# (parameters, AdamW moments, EMA), also with the patch discriminator on (its own reducer and
# optimizer, the adaptive weight from gradients averaged over the ranks); a run stopped by
# SIGUSR1 (exit 75) and resumed is bitwise identical to one never stopped; the output VAE is
# in diffusers' layout and loads back into `encode`.
source "$(dirname "$0")/train_common.bash"
setup e2e_vae_train
cd "$T"
VAE_FLAGS=(--data.limit=48 --vae.channels=8,8 --vae.norm_groups=4 --vae.latent_channels=2 --vae.mid_attention=false
           --vae_train.batch_size=8 --vae_train.log_every=1 --vae_train.eval_samples=16 --vae_train.warmup_steps=1
           --vae_train.ema_decay=0.9 --dist.timeout_s=30 --threads=1)
vae() { local run=$1; shift; RC=0; "$LF_BIN" vae train "${VAE_FLAGS[@]}" --vae_train.run_dir="$run" "$@" > "$run.log" 2>&1 || RC=$?; }
vae_np2() { local run=$1; shift; RC=0; "${MPIRUN[@]}" "$LF_BIN" vae train "${VAE_FLAGS[@]}" --vae_train.run_dir="$run" "$@" > "$run.log" 2>&1 || RC=$?; }
ck() { printf '%s/checkpoints/step-%08d' "$1" "$2"; }

echo "== f64: 2 ranks == 1 rank, without and with the discriminator"
for disc in 0 2; do
  vae one_$disc --vae_train.steps=4 --vae_train.precision=f64 --vae_train.disc_start=$disc --vae_train.disc_channels=8 \
    --vae_train.disc_layers=1; expect_rc 0 one_$disc "1 rank (disc_start=$disc)"
  vae_np2 two_$disc --vae_train.steps=4 --vae_train.precision=f64 --vae_train.disc_start=$disc --vae_train.disc_channels=8 \
    --vae_train.disc_layers=1; expect_rc 0 two_$disc "2 ranks (disc_start=$disc)"
  files=model.safetensors,ema.safetensors,optimizer.safetensors
  [ "$disc" = 0 ] || files=$files,disc.safetensors,disc_optimizer.safetensors
  $PY "$COMPARE" "$(ck two_$disc 4)" "$(ck one_$disc 4)" --atol 1e-12 --rtol 1e-9 --files "$files" \
    || fail "2 ranks differ from 1 rank (disc_start=$disc)"
done
echo "== f64: 2 sharded ranks (dist.shard_optimizer: VAE and discriminator each sharded) == 1 rank"
vae_np2 two_s --vae_train.steps=4 --vae_train.precision=f64 --vae_train.disc_start=2 --vae_train.disc_channels=8 \
  --vae_train.disc_layers=1 --dist.shard_optimizer=true --vae_train.eval_every=2; expect_rc 0 two_s "2 sharded ranks"
grep -q "disc_optimizer-00001-of-00002.safetensors" "$(ck two_s 4)/state.json" || fail "two_s wrote no sharded checkpoint"
$PY "$COMPARE" "$(ck two_s 4)" "$(ck one_2 4)" --atol 1e-12 --rtol 1e-9 \
  --files model.safetensors,ema.safetensors,optimizer.safetensors,disc.safetensors,disc_optimizer.safetensors \
  || fail "2 sharded ranks differ from 1 rank"
grep -q '"psnr"' two_s/metrics.jsonl || fail "no evaluation of the gathered EMA at step 2 in two_s/metrics.jsonl"
grep -q '"d_loss"' one_2/metrics.jsonl || fail "no discriminator loss in metrics.jsonl with disc_start=2"
grep -q '"adaptive_weight"' one_2/metrics.jsonl || fail "no adaptive weight in metrics.jsonl"

echo "== SIGUSR1 mid-run, resume: bitwise equal to an uninterrupted run"
vae straight --vae_train.steps=8; expect_rc 0 straight "uninterrupted run"
# Paused at the end of step 3 (LF_PAUSE_AT), so the signal lands there however loaded the machine is.
LF_PAUSE_AT=loop.step_end:3 "$LF_BIN" vae train "${VAE_FLAGS[@]}" --vae_train.run_dir=stopped --vae_train.steps=8 \
  > stopped.log 2>&1 &
pid=$!
wait_stopped $pid stopped.log
kill -USR1 $pid; kill -CONT $pid
RC=0; wait $pid || RC=$?
expect_rc 75 stopped "the run stopped by SIGUSR1"
[ -f "$(ck stopped 3)/state.json" ] || { cp stopped.log stopped.failed.log; ls stopped/checkpoints >&2; grep -E "step [0-9]/8|checkpoint|SIGUSR1|LF_PAUSE" stopped.log >&2; fail "no checkpoint of step 3 after SIGUSR1 at the end of step 3"; }
vae stopped --vae_train.steps=8 --resume auto; expect_rc 0 stopped "the resumed run"
$PY "$COMPARE" "$(ck stopped 8)" "$(ck straight 8)" --exact || fail "resumed run differs from the uninterrupted one"

echo "== SIGUSR1 during the start-up (before the first step): checkpoint at step 1, exit 75"
# LF_PAUSE_AT stops the process at the start of the loop's start-up (before the images are
# loaded); the signal is delivered there, and the requeue protocol must honour it.
LF_PAUSE_AT=loop.start_up "$LF_BIN" vae train "${VAE_FLAGS[@]}" --vae_train.run_dir=early --vae_train.steps=8 \
  > early.log 2>&1 &
pid=$!
wait_stopped $pid early.log
kill -USR1 $pid; kill -CONT $pid
RC=0; wait $pid || RC=$?
expect_rc 75 early "the run signalled during its start-up"
[ -f "$(ck early 1)/state.json" ] || { cat early.log; fail "no checkpoint of step 1 after SIGUSR1 during the start-up"; }
vae early --vae_train.steps=8 --resume auto; expect_rc 0 early "the run resumed after the early signal"
$PY "$COMPARE" "$(ck early 8)" "$(ck straight 8)" --exact || fail "the early-stopped run differs from the uninterrupted one"

echo "== RUN/config.ini loads back: --config RUN/config.ini --print-config is the run's resolved config"
"$LF_BIN" vae train "${VAE_FLAGS[@]}" --vae_train.run_dir=straight --vae_train.steps=8 --print-config > printed.ini \
  || fail "--print-config failed"
"$LF_BIN" vae train --config straight/config.ini --print-config > reloaded.ini || fail "--config RUN/config.ini failed"
grep -v '^#' straight/config.ini | diff - printed.ini || fail "RUN/config.ini differs from the resolved config"
diff printed.ini reloaded.ini || fail "--config RUN/config.ini does not reproduce the resolved config"

echo "== the written VAE (diffusers layout) encodes"
[ -f straight/vae/config.json ] && grep -q AutoencoderKL straight/vae/config.json || fail "no diffusers config.json"
"$LF_BIN" encode --vae.weights=straight/vae --data.limit=16 --cache.dir=cache_vae --threads=1 > enc.log 2>&1 \
  || { cat enc.log; fail "encode with the trained VAE failed"; }
"$LF_BIN" inspect straight/vae > inspect.log 2>&1 || fail "inspect of the VAE folder failed"
echo "PASS"
