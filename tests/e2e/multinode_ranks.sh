#!/usr/bin/env bash
# Multi-node for real (DESIGN.md invariants 2 and 9 across hosts): on a test cluster of two
# hosts (network namespaces with their own host names, TCP between them; cluster/netns):
#   * float64 training on 2 hosts x 2 ranks (cluster/mpirun/launch.sh -H) gives the parameters,
#     EMA and AdamW moments of 1 rank at the same global batch and of 4 ranks on one host (shared
#     memory only), to 1e-10 (the reduction order differs, so not bitwise);
#   * the same with dist.shard_optimizer (the hierarchical transport's shards, written per rank);
#   * shared memory does not reach across hosts (negative control: btl self,vader fails), so the
#     ranks did talk over TCP;
#   * encode on 2 + 1 ranks across the hosts writes the single-process cache (same shard
#     checksums);
#   * rank discovery: rank 0 logs each host's ranks with their local ranks and local size and the
#     default thread count per host (cores / ranks on that host), and every log line carries
#     the host of its rank.
source "$(dirname "${BASH_SOURCE[0]}")/multinode_common.bash"
setup multinode_ranks
cluster_up 2
H1=${HOSTS[0]} H2=${HOSTS[1]}
# As train_ranks_f64.sh: 28 samples with flipped copies, every keyed draw in play, no clipping.
make_cache --data.limit=28 --cache.flip=true
F=(--train.precision=f64 --train.steps=4 --train.ckpt_every=4 --train.grad_clip=0 --model.dropout=0.1
  --diffusion.offset_noise=0.1 --model.channels=8 --model.head_channels=8 --model.norm_groups=4)
TRAIN=("$LF_BIN" train --cache.dir="$CACHE" "${TRAIN_FLAGS[@]}" "${F[@]}")

note "== 1 rank (the reference, global batch 8)"
run_ok "$T/w1" "1 rank" "${F[@]}"

note "== 4 ranks on one host (shared memory only)"
mpi_on "$H1:4" 4 "$T/one_host.log" "${TRAIN[@]}" --train.run_dir="$T/one_host"
expect_rc 0 "$T/one_host" "4 ranks on $H1"

note "== 2 hosts x 2 ranks: cluster/mpirun/launch.sh -H hostfile -g 2 on $H1"
RC=0
on "$H1" "$LF_SOURCE_DIR/cluster/mpirun/launch.sh" -H "$HOSTFILE" -g 2 -- "${TRAIN[@]}" \
  --train.run_dir="$T/two_hosts" >"$T/two_hosts.log" 2>&1 || RC=$?
expect_rc 0 "$T/two_hosts" "2 hosts x 2 ranks"
layout="ranks on 2 hosts: $H1 ranks 0-1 (local 0-1 of 2, 1 thread each); $H2 ranks 2-3 (local 0-1 of 2, 1 thread each)"
grep -qF "$layout" "$T/two_hosts.log" || { grep -F "ranks on" "$T/two_hosts.log" >&2; fail "no layout line '$layout'"; }
echo "  $layout"
check_host_tags "$H1" "$H1" "$H2" "$H2" -- "$T/two_hosts.log"
echo "  1 rank vs 2 hosts x 2 ranks:"
compare_f64 "$(ckpt "$T/w1" 4)" "$(ckpt "$T/two_hosts" 4)"
echo "  4 ranks on one host vs 2 hosts x 2 ranks:"
compare_f64 "$(ckpt "$T/one_host" 4)" "$(ckpt "$T/two_hosts" 4)"

note "== 2 hosts x 2 ranks, dist.shard_optimizer (hierarchical reduce-scatter, each rank writes its shard)"
RC=0
on "$H1" "$LF_SOURCE_DIR/cluster/mpirun/launch.sh" -H "$HOSTFILE" -g 2 -- "${TRAIN[@]}" \
  --train.run_dir="$T/sharded" --dist.shard_optimizer=true >"$T/sharded.log" 2>&1 || RC=$?
expect_rc 0 "$T/sharded" "2 hosts x 2 ranks, sharded"
grep -q "gradient sync: hierarchical all-reduce over 2 hosts x 2 ranks" "$T/sharded.log" ||
  { grep "gradient sync" "$T/sharded.log" >&2; fail "the sharded run did not sync hierarchically"; }
grep -q "optimizer-00003-of-00004.safetensors" "$(ckpt "$T/sharded" 4)/state.json" || fail "no 4-way sharded checkpoint"
echo "  1 rank vs 2 hosts x 2 sharded ranks:"
compare_f64 "$(ckpt "$T/w1" 4)" "$(ckpt "$T/sharded" 4)"

note "== negative control: without the tcp transport the hosts cannot reach each other"
BTL=self,vader mpi_on "$H1:1,$H2:1" 2 "$T/no_tcp.log" "$LF_BIN" encode --vae.kind=identity \
  --data.limit=28 --cache.dir="$T/no_tcp" --threads=1
[[ $RC != 0 ]] || fail "2 hosts without the tcp transport ran: the hosts share more than a network"
grep -q "unable to reach each other" "$T/no_tcp.log" || { tail -n 20 "$T/no_tcp.log" >&2; fail "expected Open MPI's 'unable to reach each other'"; }
echo "  btl self,vader across hosts: exit $RC, 'unable to reach each other' (as it must)"

note "== encode on 2 ranks of $H1 and 1 of $H2, default threads"
mpi_on "$H1:2,$H2:1" 3 "$T/encode3.log" "$LF_BIN" encode --vae.kind=identity --data.limit=28 --cache.flip=true \
  --cache.dir="$T/cache3" --cache.shard_size=16 --cache.dtype=f32
expect_rc 0 "$T/encode3" "encode on 3 ranks"
cores=$(nproc)
t1=$((cores / 2)); ((t1 >= 1)) || t1=1
t2=$cores
w1=thread; ((t1 == 1)) || w1=threads
layout="ranks on 2 hosts: $H1 ranks 0-1 (local 0-1 of 2, $t1 $w1 each); $H2 rank 2 (local 0 of 1, $t2 threads)"
((t2 == 1)) && layout="ranks on 2 hosts: $H1 ranks 0-1 (local 0-1 of 2, $t1 $w1 each); $H2 rank 2 (local 0 of 1, 1 thread)"
grep -qF "$layout" "$T/encode3.log" || { grep -F "ranks on" "$T/encode3.log" >&2; fail "no layout line '$layout'"; }
echo "  $layout"
check_host_tags "$H1" "$H1" "$H2" -- "$T/encode3.log"
"$PY" - "$CACHE/manifest.json" "$T/cache3/manifest.json" <<'EOF' || fail "the 3-rank cache differs from the single-process one"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
key = lambda m: [(s["file"], s["begin"], s["count"], s["sha256"]) for s in m["shards"]]
print(f"  single process: {len(key(a))} shards; 3 ranks on 2 hosts: {len(key(b))} shards; checksums "
      + ("equal" if key(a) == key(b) else "DIFFERENT"))
sys.exit(0 if key(a) == key(b) and a["num_samples"] == b["num_samples"] else 1)
EOF
note "PASS"
