// Reducer: param.grad() are views into bucket buffers, AccumulateGrad post hooks count each
// bucket in, a communication thread all-reduces each bucket as it fills (driving MPI
// progress by polling), finish_backward scales each bucket in place as its sum completes.
#include "distributed/reducer.h"

#include <glog/logging.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <stdexcept>

#include "core/util/strings.h"
#include "distributed/agreement.h"

namespace lf::dist {
namespace {

double seconds_since(Clock::time_point t) {
  return std::chrono::duration_cast<Seconds>(Clock::now() - t).count();
}

// Runs `f`; a failure that does not already name the operation `what` (a bucket, its
// algorithm) is rethrown as std::runtime_error naming it. Timeouts and aborts pass as they are
// (their messages name the operation, or come from the rank that failed).
template <class F>
auto with_context(const std::string& tag, const std::string& what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const CollectiveTimeout&) {
    throw;
  } catch (const JobAborted&) {
    throw;
  } catch (const std::exception& e) {
    const std::string message = e.what();
    if (message.find(what) != std::string::npos) throw;
    throw std::runtime_error(lf::str(tag, " ", what, ": ", message));
  }
}

// Whether `grad` is exactly `view` (the same memory, shape and strides), not merely another
// tensor of the same bucket.
bool is_view(const torch::Tensor& grad, const torch::Tensor& view) {
  return grad.defined() && grad.data_ptr() == view.data_ptr() && grad.sizes() == view.sizes() &&
         grad.strides() == view.strides() && grad.scalar_type() == view.scalar_type();
}

}  // namespace

// Runs after a parameter's AccumulateGrad node, i.e. once per backward with the gradient
// summed over all uses already added into param.grad() (c10d's autograd_hook, registered the
// same way in Reducer::Reducer). FunctionPostHook::operator()(outputs, inputs) is the same in
// LibTorch 1.13 and 2.x (torch/csrc/autograd/function_hook.h); 2.x's compiled_args() is only
// called under compiled autograd, which C++ callers do not enable.
class GradAccumulatedHook final : public torch::autograd::FunctionPostHook {
 public:
  GradAccumulatedHook(Reducer* reducer, size_t param) : reducer_(reducer), param_(param) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    reducer_->on_grad_accumulated(param_);
    return outputs;
  }

 private:
  Reducer* reducer_;
  size_t param_;
};

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

  // Collective: host discovery and the transport's communicators, the same on every rank.
  if (options_.shard && options_.wire == GradWire::kBF16)
    throw std::invalid_argument(
        "reducer: a sharded optimizer all-gathers the parameters themselves, which bf16 on the wire would round "
        "(set dist.grad_wire = f32 with dist.shard_optimizer = true)");
  transport_ = std::make_unique<BucketSync>(*comm_, options_.algorithm, options_.wire, /*pieces=*/options_.shard);

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

  for (size_t k = 0; k < plan_.buckets.size(); ++k) {
    const Bucket& b = plan_.buckets[k];
    buffers_.push_back(torch::zeros({transport_->padded_numel(b.numel)},
                                    torch::TensorOptions().dtype(b.dtype).device(b.device)));
    transport_->add_bucket(buffers_.back(), b.numel, lf::str("bucket ", k + 1, "/", plan_.buckets.size()));
    stats_.wire_bytes_per_step += transport_->wire_bytes(k);
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto [bucket, slot] = plan_.location[i];
    const Bucket& b = plan_.buckets[static_cast<size_t>(bucket)];
    grad_views_.push_back(buffers_[static_cast<size_t>(bucket)]
                              .narrow(0, b.offsets[static_cast<size_t>(slot)], params_[i].numel())
                              .view(params_[i].sizes()));
    attach_grad_view(i);  // quietly: a grad defined before the Reducer existed is expected
  }
  if (options_.shard) {
    // The parameters move into flat buffers laid out like their gradient buckets, so that
    // all_gather_params() lands in them directly.
    torch::NoGradGuard no_grad;
    for (size_t k = 0; k < plan_.buckets.size(); ++k) {
      const Bucket& b = plan_.buckets[k];
      param_buffers_.push_back(torch::zeros_like(buffers_[k]));
      for (size_t j = 0; j < b.params.size(); ++j) {
        torch::Tensor& p = params_[static_cast<size_t>(b.params[j])];
        torch::Tensor view = param_buffers_[k].narrow(0, b.offsets[j], p.numel()).view(p.sizes());
        view.copy_(p.detach());
        p.set_data(view);
      }
    }
    // This rank's part of each bucket: [offset, offset + C) of the padded buffer, cut at the
    // parameters' boundaries.
    for (size_t k = 0; k < plan_.buckets.size(); ++k) {
      const Bucket& b = plan_.buckets[k];
      const int64_t begin = transport_->shard_offset(k);
      const int64_t end = begin + transport_->shard(k).numel();
      for (size_t j = 0; j < b.params.size(); ++j) {
        const size_t param = static_cast<size_t>(b.params[j]);
        const int64_t p0 = b.offsets[j], p1 = p0 + params_[param].numel();
        const int64_t lo = std::max(begin, p0), hi = std::min(end, p1);
        if (lo < hi) segments_.push_back(ShardSegment{param, lo - p0, hi - lo, k, lo - begin});
      }
    }
  }
  fired_.assign(params_.size(), 0);
  ready_.assign(plan_.buckets.size(), 0);
  done_.assign(plan_.buckets.size(), 0);
  pending_.clear();
  for (const Bucket& b : plan_.buckets) pending_.push_back(static_cast<int64_t>(b.params.size()));

  for (size_t i = 0; i < params_.size(); ++i) {
    // AccumulateGrad adds the new gradient in place when param.grad() is defined and grad
    // mode is off (plain backward), so it lands in the bucket; the post hook then says so.
    grad_accumulators_.push_back(torch::autograd::impl::grad_accumulator(params_[i]));
    TORCH_CHECK(grad_accumulators_.back() != nullptr, "reducer: parameter ", i,
                " has no gradient accumulator (is it a leaf that requires grad?)");
    hook_keys_.push_back(grad_accumulators_.back()->add_post_hook(
        std::make_unique<GradAccumulatedHook>(this, i)));
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
  for (size_t i = 0; i < hook_keys_.size(); ++i) grad_accumulators_[i]->del_post_hook(hook_keys_[i]);
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
  return lf::str(transport_->name(), " of bucket ", bucket + 1, "/", plan_.buckets.size(), ", ",
             human_bytes(static_cast<double>(plan_.buckets[bucket].bytes())), ", step ", step_);
}

bool Reducer::attach_grad_view(size_t param) {
  torch::Tensor& grad = params_[param].mutable_grad();
  const torch::Tensor& view = grad_views_[param];
  if (is_view(grad, view)) return false;
  torch::NoGradGuard no_grad;
  if (grad.defined()) {
    view.copy_(grad);
  } else {
    view.zero_();
  }
  grad = view;
  return true;
}

void Reducer::on_grad_accumulated(size_t param) {
  // AccumulateGrad stole or cloned the gradient instead of adding it into the view: the grad
  // was reset to undefined, replaced, or (create_graph) accumulated out of place. Its value
  // is right, only not in the bucket; put it there (c10d's mark_variable_ready_dense does
  // the same copy for grads that are not bucket views).
  if (attach_grad_view(param)) {
    bool warn = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++stats_.grads_repointed;
      warn = !warned_repoint_;
      warned_repoint_ = true;
    }
    LOG_IF(WARNING, warn) << "reducer: param.grad() of parameter " << param << " (shape "
                          << params_[param].sizes()
                          << ") was not its gradient bucket's view (reset to undefined or "
                             "replaced); copied it back. Zero gradients in place "
                             "(p.grad().zero_(), zero_grad(/*set_to_none=*/false)) to avoid "
                             "this copy. Said once; later ones at VLOG(1)";
    VLOG(1) << "reducer: re-pointed param.grad() of parameter " << param
            << " at its bucket view";
  }
  if (sync_.load()) mark_ready(param);
}

void Reducer::mark_ready(size_t param) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (fired_[param])
    throw std::logic_error(lf::str(
        "reducer: parameter ", param, " (shape ", params_[param].sizes(),
        ") received a second gradient in one sync step; call backward() once per micro-batch "
        "and finish_backward() after each (DDP: 'Expected to mark a variable ready only once')"));
  fired_[param] = 1;
  const size_t bucket = static_cast<size_t>(plan_.location[param].first);
  if (--pending_[bucket] == 0) {
    ready_[bucket] = 1;
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
  return with_context(comm_->tag(), what, [&] {
    return options_.shard ? transport_->reduce_scatter(bucket, what) : transport_->all_reduce(bucket, what);
  });
}

bool Reducer::test_bucket(Work& work) {
  return with_context(comm_->tag(), work.describe(), [&] { return work.test(); });
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
        if (test_bucket(*it->work)) {
          // The Work is destroyed before the bucket counts as done: once finish_backward() has
          // seen every bucket done, this thread holds no operation of the transport's pipeline,
          // so the caller's thread may start its all-gathers on it.
          const size_t bucket = it->bucket;
          it = in_flight.erase(it);
          complete_bucket(bucket);
          progressed = true;
          continue;
        }
        if (it->work->seconds_since_issued() > options_.timeout_s)
          throw CollectiveTimeout(timeout_message(comm_->tag(), it->work->describe(),
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
  // DDP's find_unused_parameters: a parameter outside this step's graph contributes what its
  // grad view holds: earlier micro-batches' sum, zeros after zero_(), zeros if it was reset.
  for (size_t i : unused) {
    if (attach_grad_view(i)) {
      std::lock_guard<std::mutex> lock(mutex_);
      ++stats_.grads_repointed;
    }
    mark_ready(i);
  }

  // Each bucket is scaled as soon as its sum is in, on this thread, while the later buckets'
  // all-reduces are still progressing on the communication thread (or, without overlap, are
  // in flight: every MPI_Test progresses all of them).
  if (options_.overlap) {
    // The communication thread enforces each bucket's deadline; this one only guards against
    // that thread itself being stuck.
    const Deadline backstop = Deadline::after(Seconds(options_.timeout_s * 2 + 5));
    for (size_t b = 0; b < plan_.buckets.size(); ++b) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        const bool finished =
            bucket_done_.wait_until(lock, backstop.at, [this, b] { return error_ || done_[b]; });
        if (error_) std::rethrow_exception(error_);
        if (!finished)
          throw CollectiveTimeout(timeout_message(comm_->tag(), describe_bucket(b),
                                                  seconds_since(start), options_.timeout_s * 2 + 5));
      }
      finish_bucket(b);
    }
  } else {
    std::vector<std::shared_ptr<Work>> works;
    for (size_t b = 0; b < plan_.buckets.size(); ++b) works.push_back(launch_bucket(b));
    for (size_t b = 0; b < works.size(); ++b) {
      with_context(comm_->tag(), works[b]->describe(), [&] {
        works[b]->wait();
        return true;
      });
      complete_bucket(b);
      finish_bucket(b);
    }
  }
  reset_step();
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.sync_steps += 1;
  stats_.last_unused_params = static_cast<int64_t>(unused.size());
  stats_.last_wait_s = seconds_since(start);
  stats_.total_wait_s += stats_.last_wait_s;
}

void Reducer::finish_bucket(size_t bucket) {
  // The 1/world scale comes only now, after the sum is complete (Horovod's postscale_factor;
  // c10d instead divides each gradient before the all-reduce): the sum over ranks of raw
  // gradients is exact in f64 and does not underflow in f16. In place: the bucket is the
  // grads. Times 2^-k when the world is 2^k ranks (exact, and cheaper than a division);
  // otherwise a division, not a multiplication by a rounded 1/world, so a sum of equal
  // gradients comes back exactly.
  const int world = comm_->world_size();
  if (options_.reduction != GradReduction::kAverage || world == 1) return;
  torch::NoGradGuard no_grad;
  const torch::Tensor& sum = options_.shard ? transport_->shard(bucket) : buffers_[bucket];
  if ((world & (world - 1)) == 0) {
    sum.mul_(1.0 / world);
  } else {
    sum.div_(world);
  }
}

const torch::Tensor& Reducer::shard_grad(size_t bucket) const {
  TORCH_CHECK(options_.shard, "reducer: shard_grad() of a reducer that does not shard");
  return transport_->shard(bucket);
}

void Reducer::gather_into_buckets(const std::vector<torch::Tensor>& owned, const std::string& what) {
  TORCH_CHECK(owned.size() == segments_.size(), "reducer: gather_into_buckets() got ", owned.size(),
              " segments for ", segments_.size());
  torch::NoGradGuard no_grad;
  for (size_t b = 0; b < buffers_.size(); ++b) transport_->shard(b).zero_();  // the padding stays zero
  for (size_t k = 0; k < segments_.size(); ++k) {
    const ShardSegment& s = segments_[k];
    transport_->shard(s.bucket).narrow(0, s.shard_offset, s.numel).copy_(owned[k].reshape({-1}));
  }
  all_gather_shards(buffers_, what);
}

void Reducer::all_gather_params(const std::string& what) {
  torch::NoGradGuard no_grad;
  for (size_t b = 0; b < buffers_.size(); ++b) {
    const torch::Tensor& shard = transport_->shard(b);
    shard.copy_(param_buffers_[b].narrow(0, transport_->shard_offset(b), shard.numel()));
  }
  all_gather_shards(param_buffers_, what);
}

void Reducer::all_gather_shards(const std::vector<torch::Tensor>& targets, const std::string& what) {
  TORCH_CHECK(options_.shard, "reducer: ", what, " needs a reducer that shards");
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (error_) std::rethrow_exception(error_);
  }
  std::vector<std::shared_ptr<Work>> works;
  for (size_t b = 0; b < targets.size(); ++b) {
    const std::string name = lf::str(what, ": all-gather of bucket ", b + 1, "/", targets.size(), ", step ", step_);
    works.push_back(with_context(comm_->tag(), name, [&] { return transport_->all_gather(b, name, &targets[b]); }));
  }
  for (auto& w : works)
    with_context(comm_->tag(), w->describe(), [&] {
      w->wait();
      return true;
    });
}

double Reducer::sum_over_ranks(double local, const std::string& what) {
  const torch::Device device = buffers_.empty() ? torch::Device(torch::kCPU) : buffers_.front().device();
  const torch::Tensor out =
      comm_->all_gather(torch::full({1}, local, torch::TensorOptions().dtype(torch::kDouble).device(device)), what)
          .cpu()
          .reshape({-1});
  double sum = 0.0;
  for (int r = 0; r < comm_->world_size(); ++r) sum += out[r].item<double>();
  return sum;
}

void Reducer::reset_step() {
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
