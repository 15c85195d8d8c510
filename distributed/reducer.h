// Bucketed gradient sync in the manner of PyTorch DDP's Reducer (c10d reducer.cpp) with
// gradient_as_bucket_view, and Horovod's tensor fusion: param.grad() of every parameter is a
// view into its bucket's flat buffer, so autograd accumulates straight into the bucket; a
// bucket is all-reduced as soon as the AccumulateGrad node of each of its parameters has run
// (on a communication thread, overlapping the rest of backward), and finish_backward() scales
// the sums in place to the mean. No gradient is copied into or out of a bucket.
//
// Per step, on every rank:   [set_sync(false) or NoSync for micro-batches before the last]
//   loss.backward();  reducer.finish_backward();  optimizer.step();  zero grads IN PLACE
// Gradients must be zeroed in place (p.grad().zero_(); LibTorch 1.13's Optimizer::zero_grad();
// on 2.x Optimizer::zero_grad(/*set_to_none=*/false)), never reset to undefined or replaced:
// a grad that is no longer its bucket's view is detected when its parameter's gradient
// arrives (or at finish_backward() for an unused one), copied into the bucket and re-pointed,
// with a warning the first time; that costs the copy the views exist to avoid.
// Bucket order and plan: see bucket_plan.h. Launch order: bucket k is issued only after
// buckets 0..k-1, so every rank issues the same all-reduces in the same order even when
// gradients arrive in a different order. How a bucket travels (flat or hierarchical, f32 or
// bf16 on the wire): bucket_sync.h.
#pragma once
#include <torch/csrc/autograd/function.h>
#include <torch/torch.h>

#include <atomic>
#include <cstdint>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "distributed/bucket_plan.h"
#include "distributed/bucket_sync.h"
#include "distributed/communicator.h"

namespace lf::dist {

enum class GradReduction {
  kAverage,  // sum over ranks, then times 1/world_size (data parallel's mean gradient)
  kSum,      // sum over ranks: for losses already divided by the global batch, or to fold
             // 1/world_size into a pass the caller makes anyway (a loss-scale unscale, SGD's
             // learning rate) and save the Reducer's scaling pass over the buckets; exact
             // when world_size is a power of two
};

struct ReducerOptions {
  double bucket_mb = 25.0;              // byte cap of a bucket in MiB (DDP's bucket_cap_mb)
  bool overlap = true;                  // all-reduce on a communication thread during backward;
                                        // false: all buckets after backward, on the caller's thread
  bool find_unused_parameters = true;   // zeros for parameters without a gradient this step;
                                        // false: such a parameter is an error naming it
  GradReduction reduction = GradReduction::kAverage;
  double timeout_s = 300.0;             // deadline of each bucket's all-reduce, from its launch
  PollPolicy poll;                      // how the communication thread drives MPI progress
  bool broadcast_from_rank0 = true;     // copy rank 0's parameters and buffers at construction
  AllReduceAlgorithm algorithm = AllReduceAlgorithm::kFlat;  // kAuto: hierarchical across hosts
  GradWire wire = GradWire::kF32;       // kBF16: bf16 on the wire, f32 sums (bucket_sync.h)
  bool shard = false;                   // ZeRO: reduce-scatter only (see "Sharded" below)
};

// One piece of this rank's shard (shard = true): `numel` elements of parameter `param`, from
// element `param_offset` of the flattened parameter, at `shard_offset` in bucket `bucket`'s shard.
struct ShardSegment {
  size_t param = 0;
  int64_t param_offset = 0;
  int64_t numel = 0;
  size_t bucket = 0;
  int64_t shard_offset = 0;
};

struct ReducerStats {
  int64_t sync_steps = 0;          // finish_backward() calls that synchronised
  int64_t bucket_all_reduces = 0;  // all-reduces issued since construction
  int64_t last_unused_params = 0;  // parameters without a gradient on the last sync step
  int64_t grads_repointed = 0;     // times a param.grad() was found not to be its bucket view
                                   // (reset to undefined or replaced) and was copied back
  double last_wait_s = 0.0;        // time finish_backward() took on the last sync step
  double total_wait_s = 0.0;
  WireBytes wire_bytes_per_step;   // what this rank sends per sync step (bucket_sync.h's model)
};

class Reducer {
 public:
  // Collective and blocking: duplicates `comm` (the Reducer's all-reduces never mix with the
  // caller's collectives), plans buckets, verifies on all ranks that the plan and parameter
  // shapes agree (a mismatch throws naming both values), broadcasts `params` and `buffers`
  // from rank 0, points every param.grad() at its slice of a bucket (keeping the values of a
  // grad already defined, zeros otherwise), registers a post hook on every parameter's
  // AccumulateGrad node and, with overlap, starts the communication thread. `params` must be
  // leaves that require grad, dense; `buffers` (batch norm statistics...) are only
  // broadcast. The Reducer must outlive every backward() through these parameters and must
  // not be moved; one Reducer per parameter (two would fight over param.grad()). After it is
  // destroyed, param.grad() stays a valid tensor (the view keeps its bucket alive).
  Reducer(std::vector<torch::Tensor> params, std::vector<torch::Tensor> buffers,
          Communicator& comm, ReducerOptions options = {});
  ~Reducer();
  Reducer(const Reducer&) = delete;
  Reducer& operator=(const Reducer&) = delete;

  // Whether the next backward synchronises. false for micro-batches before the last of a
  // gradient accumulation: gradients then only accumulate in param.grad() (the bucket views,
  // so the sync step all-reduces the accumulated sum) and no collective is issued. Call between steps, not during one (throws std::logic_error then).
  void set_sync(bool sync);
  bool sync() const { return sync_.load(); }

  // The step number named in timeout messages; otherwise counts sync steps from 0.
  void set_step(int64_t step);

  // Call once after each backward(). On a sync step: parameters whose hook did not fire keep
  // what their grad holds (earlier micro-batches' sum, or zeros) as their contribution, every
  // bucket is all-reduced (each against its deadline; a CollectiveTimeout names the bucket,
  // its size and the step), and with kAverage each bucket is scaled by 1/world_size in place
  // as soon as its sum is complete. On return param.grad() holds the result. A failure on
  // the communication thread is rethrown here. Not a sync step: returns at once. Blocks.
  void finish_backward();

  const BucketPlan& plan() const { return plan_; }
  // The transport: the resolved algorithm, wire format and hosts.
  const BucketSync& sync_transport() const { return *transport_; }
  ReducerStats stats() const;
  // The slice of bucket memory that param.grad() of parameter `param` should be (same shape).
  const torch::Tensor& grad_view(size_t param) const { return grad_views_.at(param); }
  // The flat buffer of `bucket`, which the all-reduce runs on (zero-padded to whole shards for
  // the sharded algorithms: BucketSync::padded_numel).
  const torch::Tensor& bucket_buffer(size_t bucket) const { return buffers_.at(bucket); }

  // Sharded (options.shard, ZeRO-1 with the reduce-scatter of ZeRO-2): every bucket is padded to a
  // multiple of W and each rank owns one contiguous W-th of it (BucketSync's shards). A sync
  // step's finish_backward() reduce-scatters instead of all-reducing: afterwards shard_grad(b)
  // holds the reduced (and, with kAverage, scaled) gradient of the rank's part of bucket b, and
  // the bucket itself (param.grad()) holds only this rank's local sum. The caller updates the
  // parameters' owned segments and then calls all_gather_params(), which brings every rank's
  // segments into the full parameters. For that, the constructor makes every parameter a view
  // into a flat, padded parameter buffer per bucket with the gradient bucket's layout
  // (Tensor::set_data: the parameters keep their identity, values and shapes), so the all-gather
  // writes the parameters in place, with no copy.
  bool sharded() const { return options_.shard; }
  // This rank's segments, in bucket order (empty unless sharded).
  const std::vector<ShardSegment>& segments() const { return segments_; }
  const torch::Tensor& shard_grad(size_t bucket) const;
  // Every rank's `owned[k]` (segments()[k]'s numel elements, e.g. EMA averages) into the gradient
  // buckets, so that grad_view(param) holds the whole of parameter `param`'s values; the caller
  // zeroes the gradients before the next backward. Call between steps only (after
  // finish_backward(), not during a backward). Collective and blocking; exact (full precision).
  void gather_into_buckets(const std::vector<torch::Tensor>& owned, const std::string& what);
  // Every rank's part of the parameters into every rank's parameters (after the caller updated its
  // segments, which are views into them). Collective and blocking; exact.
  void all_gather_params(const std::string& what);
  // The sum of one value per rank, added in rank order (the same bits on every rank). Collective.
  double sum_over_ranks(double local, const std::string& what);

 private:
  friend class GradAccumulatedHook;
  // Post hook of parameter `param`'s AccumulateGrad: its gradient is now in its bucket view.
  void on_grad_accumulated(size_t param);
  // Re-points param.grad() at its bucket view when it is not (copying its values, or zeros
  // when undefined). Returns whether it had to.
  bool attach_grad_view(size_t param);
  // Counts the parameter in; launches what is ready.
  void mark_ready(size_t param);
  void launch_ready_locked();
  std::shared_ptr<Work> launch_bucket(size_t bucket);
  bool test_bucket(Work& work);  // work.test(), a failure named by the bucket
  void complete_bucket(size_t bucket);
  void finish_bucket(size_t bucket);  // the post-reduction scale
  std::string describe_bucket(size_t bucket) const;
  // Sharded: every rank's shard(b) into targets[b] for every bucket (started in bucket order, then
  // waited for); rethrows a failure of the communication thread first.
  void all_gather_shards(const std::vector<torch::Tensor>& targets, const std::string& what);
  void communication_loop();
  void reset_step();

  std::vector<torch::Tensor> params_;
  std::vector<torch::Tensor> grad_views_;  // per parameter: its slice of its bucket
  // Held here: a leaf only keeps a weak reference to its AccumulateGrad node, which (with our
  // hook) would otherwise die after each backward (c10d keeps them the same way).
  std::vector<std::shared_ptr<torch::autograd::Node>> grad_accumulators_;
  std::vector<uintptr_t> hook_keys_;
  std::unique_ptr<Communicator> comm_;
  ReducerOptions options_;
  BucketPlan plan_;
  std::unique_ptr<BucketSync> transport_;
  std::vector<torch::Tensor> buffers_;  // one flat gradient buffer per bucket
  std::vector<ShardSegment> segments_;  // sharded: this rank's pieces of the parameters
  std::vector<torch::Tensor> param_buffers_;  // sharded: per bucket, the parameters' flat storage

  std::atomic<bool> sync_{true};
  mutable std::mutex mutex_;
  std::condition_variable queue_changed_;  // communication thread: new buckets or stop
  std::condition_variable bucket_done_;    // finish_backward: a bucket finished or failed
  std::vector<char> fired_;                // per param, this step
  std::vector<int64_t> pending_;           // per bucket: parameters not yet ready
  std::vector<char> ready_;
  std::vector<char> done_;
  size_t next_launch_ = 0;
  size_t done_count_ = 0;
  std::vector<size_t> queue_;              // buckets handed to the communication thread
  std::exception_ptr error_;
  bool stop_ = false;
  bool warned_repoint_ = false;
  int64_t step_ = 0;
  ReducerStats stats_;
  std::thread thread_;
};

// Turns synchronisation off for its lifetime (DDP's no_sync()): wrap every micro-batch but
// the last of an accumulation.
class NoSync {
 public:
  explicit NoSync(Reducer& reducer) : reducer_(reducer), previous_(reducer.sync()) {
    reducer_.set_sync(false);
  }
  ~NoSync() { reducer_.set_sync(previous_); }
  NoSync(const NoSync&) = delete;
  NoSync& operator=(const NoSync&) = delete;

 private:
  Reducer& reducer_;
  bool previous_;
};

}  // namespace lf::dist
