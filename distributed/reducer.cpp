// Reducer: gradient hooks fill bucket buffers, a communication thread all-reduces each bucket
// as it fills (driving MPI progress by polling), finish_backward averages and writes back.
#include "distributed/reducer.h"

#include <algorithm>
#include <stdexcept>

#include "core/util/strings.h"
#include "distributed/agreement.h"

namespace lf::dist {
namespace {

double seconds_since(Clock::time_point t) {
  return std::chrono::duration_cast<Seconds>(Clock::now() - t).count();
}

}  // namespace

Reducer::Reducer(std::vector<torch::Tensor> params, std::vector<torch::Tensor> buffers,
                 Communicator& comm, ReducerOptions options)
    : params_(std::move(params)), options_(options) {
  if (!(options_.bucket_mb > 0.0))
    throw std::invalid_argument(lf::str("reducer: bucket_mb must be > 0, got ", options_.bucket_mb));
  if (!(options_.timeout_s > 0.0))
    throw std::invalid_argument(lf::str("reducer: timeout_s must be > 0, got ", options_.timeout_s));
  std::vector<ParamSpec> specs;
  for (size_t i = 0; i < params_.size(); ++i) {
    const torch::Tensor& p = params_[i];
    TORCH_CHECK(p.defined() && p.requires_grad() && p.is_leaf(), "reducer: parameter ", i,
                " must be a leaf tensor that requires grad (pass module->parameters())");
    TORCH_CHECK(!p.is_sparse(), "reducer: parameter ", i, " is sparse; only dense gradients are "
                "bucketed");
    specs.push_back(ParamSpec::of(p));
  }
  plan_ = plan_buckets(specs, static_cast<int64_t>(options_.bucket_mb * 1024.0 * 1024.0));

  comm_ = comm.duplicate();
  comm_->set_timeout(Seconds(options_.timeout_s));
  comm_->set_poll_policy(options_.poll);

  // Start-up agreement (STYLE.md "At start-up all ranks check they agree"): counts first, as
  // they say the most about a mismatch, then the hashes that cover every shape and offset.
  int64_t total_numel = 0;
  for (const ParamSpec& s : specs) total_numel += s.numel();
  verify_same_on_all_ranks(
      *comm_, {static_cast<int64_t>(specs.size()), total_numel,
               static_cast<int64_t>(plan_.buckets.size())},
      {"parameter_count", "parameter_elements", "bucket_count"}, "gradient bucket plan");
  verify_same_on_all_ranks(*comm_,
                           {static_cast<int64_t>(shapes_hash(specs)),
                            static_cast<int64_t>(plan_.hash())},
                           {"shapes_hash", "plan_hash"}, "gradient bucket plan", /*hex=*/true);

  if (options_.broadcast_from_rank0) {
    // Same initial weights everywhere (DDP's _sync_module_states). detach(): MPI writes the
    // raw storage; autograd must not see an in-place op on a leaf.
    for (size_t i = 0; i < params_.size(); ++i)
      comm_->broadcast(params_[i].detach(), 0, lf::str("broadcast of parameter ", i));
    for (size_t i = 0; i < buffers.size(); ++i) {
      TORCH_CHECK(buffers[i].is_contiguous(), "reducer: buffer ", i, " is not contiguous");
      comm_->broadcast(buffers[i].detach(), 0, lf::str("broadcast of buffer ", i));
    }
  }

  for (const Bucket& b : plan_.buckets)
    buffers_.push_back(torch::zeros({b.numel}, torch::TensorOptions().dtype(b.dtype).device(b.device)));
  fired_.assign(params_.size(), 0);
  ready_.assign(plan_.buckets.size(), 0);
  done_.assign(plan_.buckets.size(), 0);
  pending_.clear();
  for (const Bucket& b : plan_.buckets) pending_.push_back(static_cast<int64_t>(b.params.size()));

  for (size_t i = 0; i < params_.size(); ++i) {
    // A hook on a leaf runs before AccumulateGrad adds `grad` into param.grad(), once per
    // backward with the gradient summed over all uses (torch/csrc/autograd/functions/
    // accumulate_grad.h), which is DDP's autograd_hook.
    hook_ids_.push_back(
        params_[i].register_hook([this, i](const torch::Tensor& grad) { on_gradient(i, grad); }));
  }
  if (options_.overlap) thread_ = std::thread([this] { communication_loop(); });
}

Reducer::~Reducer() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  queue_changed_.notify_all();
  if (thread_.joinable()) thread_.join();
  for (size_t i = 0; i < params_.size(); ++i) params_[i].remove_hook(hook_ids_[i]);
}

void Reducer::set_sync(bool sync) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (std::find(fired_.begin(), fired_.end(), 1) != fired_.end())
    throw std::logic_error(
        "reducer: set_sync() during a sync step (after backward, before finish_backward)");
  sync_.store(sync);
}

void Reducer::set_step(int64_t step) {
  std::lock_guard<std::mutex> lock(mutex_);
  step_ = step;
}

ReducerStats Reducer::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

std::string Reducer::describe_bucket(size_t bucket) const {
  return lf::str("all_reduce of bucket ", bucket + 1, "/", plan_.buckets.size(), ", ",
             human_bytes(static_cast<double>(plan_.buckets[bucket].bytes())), ", step ", step_);
}

void Reducer::on_gradient(size_t param, const torch::Tensor& grad) {
  if (!sync_.load()) return;  // accumulation micro-batch: autograd accumulates as usual
  TORCH_CHECK(grad.defined() && !grad.is_sparse(), "reducer: parameter ", param,
              " received an undefined or sparse gradient");
  mark_ready(param, &grad);
}

void Reducer::mark_ready(size_t param, const torch::Tensor* grad) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (fired_[param])
      throw std::logic_error(lf::str(
          "reducer: parameter ", param, " (shape ", params_[param].sizes(),
          ") received a second gradient in one sync step; call backward() once per micro-batch "
          "and finish_backward() after each (DDP: 'Expected to mark a variable ready only once')"));
    fired_[param] = 1;
  }
  // Outside the lock: this parameter's slice is written by this thread only.
  const auto [bucket, slot] = plan_.location[param];
  const Bucket& b = plan_.buckets[static_cast<size_t>(bucket)];
  const torch::Tensor& p = params_[param];
  torch::Tensor view = buffers_[static_cast<size_t>(bucket)]
                           .narrow(0, b.offsets[static_cast<size_t>(slot)], p.numel())
                           .view(p.sizes());
  {
    torch::NoGradGuard no_grad;
    // param.grad() still holds only the earlier micro-batches' sum: AccumulateGrad adds this
    // step's gradient after the hook; finish_backward() overwrites param.grad() anyway.
    const torch::Tensor& accumulated = p.grad();
    if (grad != nullptr) {
      if (accumulated.defined()) {
        torch::add_out(view, *grad, accumulated);  // one pass over memory, not copy + add
      } else {
        view.copy_(*grad);
      }
    } else if (accumulated.defined()) {
      view.copy_(accumulated);
    } else {
      view.zero_();
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (--pending_[static_cast<size_t>(bucket)] == 0) {
    ready_[static_cast<size_t>(bucket)] = 1;
    launch_ready_locked();
  }
}

void Reducer::launch_ready_locked() {
  if (!options_.overlap) return;  // finish_backward() launches everything in order
  bool queued = false;
  while (next_launch_ < ready_.size() && ready_[next_launch_]) {
    queue_.push_back(next_launch_++);
    queued = true;
  }
  if (queued) queue_changed_.notify_one();
}

std::shared_ptr<Work> Reducer::launch_bucket(size_t bucket) {
  std::string what;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    what = describe_bucket(bucket);
    ++stats_.bucket_all_reduces;
  }
  return comm_->all_reduce_async(buffers_[bucket], ReduceOp::kSum, what);
}

void Reducer::complete_bucket(size_t bucket) {
  std::lock_guard<std::mutex> lock(mutex_);
  done_[bucket] = 1;
  ++done_count_;
  bucket_done_.notify_all();
}

void Reducer::communication_loop() {
  struct InFlight {
    size_t bucket;
    std::shared_ptr<Work> work;
  };
  std::vector<InFlight> in_flight;
  Backoff backoff(options_.poll);
  while (true) {
    std::vector<size_t> to_launch;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (in_flight.empty())
        queue_changed_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;  // an abandoned Work keeps its buffer alive (MPIWork's destructor)
      to_launch.swap(queue_);
    }
    try {
      for (size_t b : to_launch) in_flight.push_back({b, launch_bucket(b)});
      bool progressed = !to_launch.empty();
      for (auto it = in_flight.begin(); it != in_flight.end();) {
        if (it->work->test()) {
          complete_bucket(it->bucket);
          it = in_flight.erase(it);
          progressed = true;
          continue;
        }
        if (it->work->seconds_since_issued() > options_.timeout_s)
          throw CollectiveTimeout(timeout_message(comm_->tag(), it->work->what(),
                                                  it->work->seconds_since_issued(),
                                                  options_.timeout_s));
        ++it;
      }
      if (progressed) {
        backoff.reset();
      } else if (!in_flight.empty()) {
        backoff.pause();
      }
    } catch (...) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        error_ = std::current_exception();
      }
      bucket_done_.notify_all();
      return;
    }
  }
}

void Reducer::finish_backward() {
  if (!sync_.load()) return;
  const Clock::time_point start = Clock::now();
  std::vector<size_t> unused;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (error_) std::rethrow_exception(error_);
    for (size_t i = 0; i < fired_.size(); ++i)
      if (!fired_[i]) unused.push_back(i);
  }
  if (!unused.empty() && !options_.find_unused_parameters) {
    std::vector<std::string> names;
    for (size_t k = 0; k < std::min<size_t>(unused.size(), 8); ++k)
      names.push_back(lf::str(unused[k], " ", params_[unused[k]].sizes()));
    throw std::invalid_argument(lf::str(
        comm_->tag(), " reducer: ", unused.size(), " parameter(s) received no gradient this step (",
        join(names, ", "), unused.size() > 8 ? ", ..." : "",
        "); their buckets would never complete. Set find_unused_parameters, or leave these "
        "parameters out of the reducer"));
  }
  // DDP's find_unused_parameters: a parameter outside this step's graph contributes zeros.
  for (size_t i : unused) mark_ready(i, nullptr);

  if (options_.overlap) {
    std::unique_lock<std::mutex> lock(mutex_);
    // The communication thread enforces each bucket's deadline; this one only guards against
    // that thread itself being stuck.
    const Deadline backstop = Deadline::after(Seconds(options_.timeout_s * 2 + 5));
    const bool finished = bucket_done_.wait_until(lock, backstop.at, [this] {
      return error_ || done_count_ == plan_.buckets.size();
    });
    if (error_) std::rethrow_exception(error_);
    if (!finished) {
      size_t first = 0;
      while (first < done_.size() && done_[first]) ++first;
      throw CollectiveTimeout(timeout_message(comm_->tag(), describe_bucket(first),
                                              seconds_since(start), options_.timeout_s * 2 + 5));
    }
  } else {
    std::vector<std::shared_ptr<Work>> works;
    for (size_t b = 0; b < plan_.buckets.size(); ++b) works.push_back(launch_bucket(b));
    for (size_t b = 0; b < works.size(); ++b) {
      works[b]->wait();
      complete_bucket(b);
    }
  }
  write_back_and_reset();
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.sync_steps += 1;
  stats_.last_unused_params = static_cast<int64_t>(unused.size());
  stats_.last_wait_s = seconds_since(start);
  stats_.total_wait_s += stats_.last_wait_s;
}

void Reducer::write_back_and_reset() {
  torch::NoGradGuard no_grad;
  // The 1/world scale comes only now, after the sum is complete (Horovod's postscale_factor;
  // c10d instead divides each gradient before the all-reduce): the sum over ranks of raw
  // gradients is exact in f64 and does not underflow in f16. Fused with the copy into
  // param.grad() so the bucket is read once.
  const bool average = options_.reduction == GradReduction::kAverage && comm_->world_size() > 1;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto [bucket, slot] = plan_.location[i];
    const Bucket& b = plan_.buckets[static_cast<size_t>(bucket)];
    torch::Tensor& p = params_[i];
    torch::Tensor summed = buffers_[static_cast<size_t>(bucket)]
                               .narrow(0, b.offsets[static_cast<size_t>(slot)], p.numel())
                               .view(p.sizes());
    if (!p.grad().defined()) {
      p.mutable_grad() = average ? summed / comm_->world_size() : summed.clone();
    } else if (average) {
      torch::div_out(p.mutable_grad(), summed,
                     torch::scalar_tensor(comm_->world_size(), summed.options()));
    } else {
      p.mutable_grad().copy_(summed);
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  std::fill(fired_.begin(), fired_.end(), 0);
  std::fill(ready_.begin(), ready_.end(), 0);
  std::fill(done_.begin(), done_.end(), 0);
  for (size_t b = 0; b < plan_.buckets.size(); ++b)
    pending_[b] = static_cast<int64_t>(plan_.buckets[b].params.size());
  next_launch_ = 0;
  done_count_ = 0;
  ++step_;
}

}  // namespace lf::dist
