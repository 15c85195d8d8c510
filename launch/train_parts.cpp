// Shared pieces of the training loops (see train_parts.h).
#include "launch/train_parts.h"

#include <glog/logging.h>

#include <algorithm>
#include <cstdlib>

#include "core/util/strings.h"
#include "launch/config_registry.h"

namespace lf::launch {

NamedTensors named_parameters(const torch::nn::Module& m) {
  NamedTensors out;
  for (const auto& item : m.named_parameters(true)) out.emplace_back(item.key(), item.value());
  return out;
}

ParamGroup make_param_group(torch::nn::Module& m, const TrainLoopConfig& loop, double lr, const DistConfig& d,
                            Runtime& rt, dist::GradReduction reduction) {
  ParamGroup g;
  g.named = named_parameters(m);
  for (auto& [n, p] : g.named) g.params.push_back(p);
  if (rt.world() > 1) {
    dist::ReducerOptions ro;
    ro.bucket_mb = d.bucket_mb;
    ro.overlap = d.overlap;
    ro.timeout_s = d.timeout_s;
    ro.find_unused_parameters = true;
    ro.reduction = reduction;
    ro.algorithm = d.allreduce;
    ro.wire = d.grad_wire;
    ro.shard = d.shard_optimizer;
    std::vector<at::Tensor> buffers;
    for (const auto& b : m.buffers(true)) buffers.push_back(b);
    g.reducer = std::make_unique<dist::Reducer>(g.params, buffers, rt.comm(), ro);
    if (rt.is_root()) LOG(INFO) << g.reducer->sync_transport().describe(d.allreduce);
  }
  if (g.reducer && g.reducer->sharded()) {
    g.sharded = true;
    for (const dist::ShardSegment& s : g.reducer->segments()) {
      const auto& [name, p] = g.named[s.param];
      at::Tensor view = p.detach().view({-1}).narrow(0, s.param_offset, s.numel);
      view.mutable_grad() = g.reducer->shard_grad(s.bucket).narrow(0, s.shard_offset, s.numel);
      g.owned.emplace_back(segment_key(name, s.param_offset), view);
    }
  }
  g.optimizer = std::make_unique<core::AdamW>(
      g.updated(), core::AdamWOptions{lr, loop.adam_beta1, loop.adam_beta2, loop.adam_eps, loop.weight_decay});
  return g;
}

std::vector<at::Tensor> ParamGroup::updated_tensors() const {
  std::vector<at::Tensor> out;
  for (const auto& [n, t] : updated()) out.push_back(t);
  return out;
}

std::string segment_key(const std::string& name, int64_t offset) { return name + "@" + std::to_string(offset); }

bool split_segment_key(const std::string& key, std::string& name, int64_t& offset) {
  const size_t at = key.rfind('@');
  if (at == std::string::npos || at == 0 || at + 1 == key.size()) return false;
  int64_t v = 0;
  for (size_t i = at + 1; i < key.size(); ++i) {
    if (key[i] < '0' || key[i] > '9' || v > (int64_t{1} << 56)) return false;
    v = v * 10 + (key[i] - '0');
  }
  name = key.substr(0, at);
  offset = v;
  return true;
}

void LossWindow::add(const std::vector<double>& values) {
  for (size_t i = 0; i < sums_.size() && i < values.size(); ++i) sums_[i] += values[i];
  ++steps_;
}

std::vector<double> LossWindow::take_means(dist::Communicator& comm) {
  at::Tensor t = at::tensor(sums_, at::kDouble);
  if (comm.world_size() > 1) comm.all_reduce(t, dist::ReduceOp::kSum, "all_reduce of the logged losses");
  const double n = static_cast<double>(comm.world_size()) * static_cast<double>(std::max<int64_t>(1, steps_));
  std::vector<double> out(sums_.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = t[static_cast<int64_t>(i)].item<double>() / n;
  std::fill(sums_.begin(), sums_.end(), 0.0);
  steps_ = 0;
  return out;
}

void zero_grads(const std::vector<at::Tensor>& params) {
  for (const auto& p : params)
    if (p.grad().defined()) p.mutable_grad().zero_();
}

DebugSwitches read_debug_switches() {
  auto flag = [](const char* name) {
    const char* v = std::getenv(name);
    return v && std::string(v) == "1";
  };
  auto integer = [](const char* name, int64_t fallback) -> int64_t {
    const char* v = std::getenv(name);
    if (!v || !*v) return fallback;
    char* end = nullptr;
    long long x = std::strtoll(v, &end, 10);
    if (*end != '\0' || x < 0)
      throw UsageError(str(name, " = '", v, "': expected a non-negative integer (a debug switch)"));
    return x;
  };
  DebugSwitches d;
  d.sum_grads = flag("LF_DEBUG_SUM_GRADS");
  d.rank_noise = flag("LF_DEBUG_RANK_NOISE");
  d.throw_at_step = integer("LF_DEBUG_THROW_AT_STEP", -1);
  d.throw_rank = integer("LF_DEBUG_THROW_RANK", 0);
  d.ckpt_delay_ms = integer("LF_DEBUG_CKPT_DELAY_MS", 0);
  d.ckpt_fail = flag("LF_DEBUG_CKPT_FAIL");
  return d;
}

}  // namespace lf::launch
