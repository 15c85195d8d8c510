// Shared by the Reducer tests on the fake (tests/distributed) and under mpirun (tests/mpi): a
// small f64 model, a batch known by construction, the full-batch reference gradients, and a
// Communicator decorator that counts all-reduces.
#pragma once
#include <torch/torch.h>

#include <atomic>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "distributed/communicator.h"
#include "distributed/reducer.h"

namespace lf::dist::testkit {

inline torch::nn::Sequential make_model(uint64_t seed) {
  torch::manual_seed(seed);
  torch::nn::Sequential model(torch::nn::Linear(4, 16), torch::nn::Tanh(), torch::nn::Linear(16, 16),
                              torch::nn::Tanh(), torch::nn::Linear(16, 3));
  model->to(torch::kDouble);
  return model;
}

// Rows [begin, end) of a fixed batch (no RNG: the same on every rank and thread).
inline torch::Tensor inputs(int64_t begin, int64_t end) {
  auto i = torch::arange(begin * 4, end * 4, torch::kDouble);
  return torch::sin(i * 0.37 + 0.1).view({end - begin, 4});
}
inline torch::Tensor targets(int64_t begin, int64_t end) {
  auto i = torch::arange(begin * 3, end * 3, torch::kDouble);
  return torch::cos(i * 0.21).view({end - begin, 3});
}

// Mean squared error over rows [begin, end), times `scale` (1/micro-batches when accumulating).
inline torch::Tensor loss_on(torch::nn::Sequential& model, int64_t begin, int64_t end,
                             double scale = 1.0) {
  return torch::mse_loss(model->forward(inputs(begin, end)), targets(begin, end)) * scale;
}

// Gradients of the mean loss over rows [0, batch) on one model: the reference.
inline std::vector<torch::Tensor> full_batch_gradients(uint64_t seed, int64_t batch) {
  torch::nn::Sequential model = make_model(seed);
  loss_on(model, 0, batch).backward();
  std::vector<torch::Tensor> grads;
  for (const auto& p : model->parameters()) grads.push_back(p.grad().clone());
  return grads;
}

// "" when every gradient matches within tol, else the first differing parameter and entry.
inline std::string compare_gradients(const std::vector<torch::Tensor>& got,
                                     const std::vector<torch::Tensor>& expected, double tol) {
  if (got.size() != expected.size()) return "different parameter counts";
  double worst = 0.0;
  std::ostringstream os;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!got[i].defined()) return "parameter " + std::to_string(i) + " has no gradient";
    const torch::Tensor diff = (got[i] - expected[i]).abs().flatten();
    const double max = diff.max().item<double>();
    worst = std::max(worst, max);
    if (max > tol && os.str().empty()) {
      const int64_t k = diff.argmax().item<int64_t>();
      os << "parameter " << i << " entry " << k << ": got " << got[i].flatten()[k].item<double>()
         << ", expected " << expected[i].flatten()[k].item<double>();
    }
  }
  if (os.str().empty()) return "";
  os << " (max abs error " << worst << ", tolerance " << tol << ")";
  return os.str();
}

inline std::vector<torch::Tensor> gradients_of(torch::nn::Sequential& model) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : model->parameters()) grads.push_back(p.grad().defined() ? p.grad().clone() : torch::Tensor());
  return grads;
}

// "" when every parameter's grad is exactly its bucket slice (the Reducer's
// gradient-as-bucket-view contract: same memory as the planned offset of the bucket buffer,
// same shape), else the first parameter that is not.
inline std::string grads_are_bucket_views(const Reducer& reducer,
                                          const std::vector<torch::Tensor>& params) {
  const BucketPlan& plan = reducer.plan();
  for (size_t i = 0; i < params.size(); ++i) {
    const torch::Tensor& g = params[i].grad();
    const auto [bucket, slot] = plan.location[i];
    const torch::Tensor& buffer = reducer.bucket_buffer(static_cast<size_t>(bucket));
    const int64_t offset = plan.buckets[static_cast<size_t>(bucket)].offsets[static_cast<size_t>(slot)];
    std::ostringstream os;
    os << "parameter " << i << ": ";
    if (!g.defined()) return os.str() + "grad is undefined";
    if (!g.is_alias_of(buffer)) return os.str() + "grad does not share its bucket's storage";
    const auto* expected = static_cast<const char*>(buffer.data_ptr()) + offset * buffer.element_size();
    if (static_cast<const char*>(g.data_ptr()) != expected) {
      os << "grad starts at byte " << static_cast<const char*>(g.data_ptr()) - static_cast<const char*>(buffer.data_ptr())
         << " of its bucket, the plan says " << offset * buffer.element_size();
      return os.str();
    }
    if (g.sizes() != params[i].sizes()) return os.str() + "grad has another shape";
  }
  return "";
}

inline void zero_grads(const std::vector<torch::Tensor>& params) {
  for (const auto& p : params)
    if (p.grad().defined()) p.grad().zero_();
}

// Forwards to another communicator, counting all-reduces in a counter shared with duplicates.
class CountingCommunicator final : public Communicator {
 public:
  CountingCommunicator(Communicator& inner, std::shared_ptr<std::atomic<int64_t>> count)
      : inner_(&inner), count_(std::move(count)) {}
  CountingCommunicator(std::unique_ptr<Communicator> owned, std::shared_ptr<std::atomic<int64_t>> count)
      : owned_(std::move(owned)), inner_(owned_.get()), count_(std::move(count)) {}

  int rank() const override { return inner_->rank(); }
  int world_size() const override { return inner_->world_size(); }
  std::string backend() const override { return inner_->backend(); }
  std::string host() const override { return inner_->host(); }
  std::shared_ptr<Work> all_reduce_async(const torch::Tensor& t, ReduceOp op,
                                         const std::string& what) override {
    ++*count_;
    return inner_->all_reduce_async(t, op, what);
  }
  std::shared_ptr<Work> broadcast_async(const torch::Tensor& t, int root,
                                        const std::string& what) override {
    return inner_->broadcast_async(t, root, what);
  }
  std::shared_ptr<Work> all_gather_async(const torch::Tensor& in, const torch::Tensor& out,
                                         const std::string& what) override {
    return inner_->all_gather_async(in, out, what);
  }
  std::shared_ptr<Work> all_to_all_async(const torch::Tensor& in, const torch::Tensor& out,
                                         const std::string& what) override {
    return inner_->all_to_all_async(in, out, what);
  }
  std::shared_ptr<Work> barrier_async(const std::string& what) override {
    return inner_->barrier_async(what);
  }
  std::unique_ptr<Communicator> duplicate() override {
    auto dup = inner_->duplicate();
    dup->set_timeout(timeout());
    dup->set_poll_policy(poll_policy());
    return std::make_unique<CountingCommunicator>(std::move(dup), count_);
  }
  std::unique_ptr<Communicator> split(int color, int key) override {
    return std::make_unique<CountingCommunicator>(inner_->split(color, key), count_);
  }
  [[noreturn]] void abort(const std::string& message) override {
    inner_->abort(message);
    throw std::logic_error("unreachable: Communicator::abort returned");
  }

 private:
  std::unique_ptr<Communicator> owned_;
  Communicator* inner_;
  std::shared_ptr<std::atomic<int64_t>> count_;
};

}  // namespace lf::dist::testkit
