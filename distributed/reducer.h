// Bucketed gradient sync in the manner of PyTorch DDP's Reducer (c10d reducer.cpp) and
// Horovod's tensor fusion: gradients are copied into per-bucket flat buffers by autograd
// hooks as backward produces them, each bucket is all-reduced as soon as all of its
// gradients are in (on a communication thread, overlapping the rest of backward), and
// finish_backward() writes the averaged result back into param.grad().
//
// Per step, on every rank:   [set_sync(false) or NoSync for micro-batches before the last]
//   loss.backward();  reducer.finish_backward();  optimizer.step();
// Bucket order and plan: see bucket_plan.h. Launch order: bucket k is issued only after
// buckets 0..k-1, so every rank issues the same all-reduces in the same order even when
// gradients arrive in a different order.
#pragma once
#include <torch/torch.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "distributed/bucket_plan.h"
#include "distributed/communicator.h"

namespace lf::dist {

enum class GradReduction {
  kAverage,  // sum over ranks, then times 1/world_size (data parallel's mean gradient)
  kSum,      // sum over ranks (for losses already divided by the global batch)
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
};

struct ReducerStats {
  int64_t sync_steps = 0;          // finish_backward() calls that synchronised
  int64_t bucket_all_reduces = 0;  // all-reduces issued since construction
  int64_t last_unused_params = 0;  // parameters without a gradient on the last sync step
  double last_wait_s = 0.0;        // time finish_backward() took on the last sync step
  double total_wait_s = 0.0;
};

class Reducer {
 public:
  // Collective and blocking: duplicates `comm` (the Reducer's all-reduces never mix with the
  // caller's collectives), plans buckets, verifies on all ranks that the plan and parameter
  // shapes agree (a mismatch throws naming both values), broadcasts `params` and `buffers`
  // from rank 0, registers a gradient hook on every parameter and, with overlap, starts the
  // communication thread. `params` must be leaves that require grad, dense; `buffers` (batch
  // norm statistics...) are only broadcast. The Reducer must outlive every backward() through
  // these parameters and must not be moved.
  Reducer(std::vector<torch::Tensor> params, std::vector<torch::Tensor> buffers,
          Communicator& comm, ReducerOptions options = {});
  ~Reducer();
  Reducer(const Reducer&) = delete;
  Reducer& operator=(const Reducer&) = delete;

  // Whether the next backward synchronises. false for micro-batches before the last of a
  // gradient accumulation: gradients then only accumulate in param.grad() and no collective
  // is issued. Call between steps, not during one (throws std::logic_error then).
  void set_sync(bool sync);
  bool sync() const { return sync_.load(); }

  // The step number named in timeout messages; otherwise counts sync steps from 0.
  void set_step(int64_t step);

  // Call once after each backward(). On a sync step: gives parameters whose hook did not fire
  // zeros (plus what they accumulated earlier), waits for every bucket's all-reduce (each
  // against its deadline; a CollectiveTimeout names the bucket, its size and the step), and
  // writes the averaged gradients into param.grad(). A failure on the communication thread is
  // rethrown here. Not a sync step: returns at once. Blocks.
  void finish_backward();

  const BucketPlan& plan() const { return plan_; }
  ReducerStats stats() const;

 private:
  void on_gradient(size_t param, const torch::Tensor& grad);
  // Copies the gradient (or zeros) plus param.grad() into the bucket; launches what is ready.
  void mark_ready(size_t param, const torch::Tensor* grad);
  void launch_ready_locked();
  std::shared_ptr<Work> launch_bucket(size_t bucket);
  void complete_bucket(size_t bucket);
  std::string describe_bucket(size_t bucket) const;
  void communication_loop();
  void write_back_and_reset();

  std::vector<torch::Tensor> params_;
  std::vector<unsigned> hook_ids_;
  std::unique_ptr<Communicator> comm_;
  ReducerOptions options_;
  BucketPlan plan_;
  std::vector<torch::Tensor> buffers_;  // one flat gradient buffer per bucket

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
