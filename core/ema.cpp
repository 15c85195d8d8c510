// EMA of parameters: warm-up decay, foreach updates, copy-out and checkpoint state.
#include "core/ema.h"

#include <algorithm>
#include <map>
#include <set>
#include <stdexcept>

#include "core/util/strings.h"

namespace lf::core {

EMA::EMA(const NamedTensors& params, double decay, bool warmup) : decay_(decay), warmup_(warmup) {
  if (!(decay >= 0.0 && decay <= 1.0)) {
    throw std::invalid_argument(
        lf::str("EMA decay is ", decay, ", expected a value in [0, 1] (typically 0.9999)"));
  }
  std::set<std::string> seen;
  at::NoGradGuard no_grad;
  for (const auto& [name, tensor] : params) {
    if (name == kNumUpdatesKey) {
      throw std::invalid_argument(
          lf::str("EMA: parameter name '", name, "' is reserved for the update count"));
    }
    if (!seen.insert(name).second) {
      throw std::invalid_argument(lf::str("EMA: parameter name '", name, "' appears twice"));
    }
    names_.push_back(name);
    shadow_.push_back(tensor.detach().clone());
  }
}

double EMA::next_decay() const {
  if (!warmup_) return decay_;
  const double n = static_cast<double>(num_updates_ + 1);
  return std::min(decay_, (1.0 + n) / (10.0 + n));
}

void EMA::check_params(const std::vector<at::Tensor>& params, const char* what) const {
  TORCH_CHECK(params.size() == shadow_.size(), "EMA::", what, ": got ", params.size(),
              " parameters, the EMA tracks ", shadow_.size());
  for (size_t i = 0; i < params.size(); ++i) {
    TORCH_CHECK(params[i].sizes() == shadow_[i].sizes() &&
                    params[i].scalar_type() == shadow_[i].scalar_type() &&
                    params[i].device() == shadow_[i].device(),
                "EMA::", what, ": parameter ", i, " ('", names_[i], "') is ",
                params[i].scalar_type(), params[i].sizes(), " on ", params[i].device(),
                ", the EMA holds ", shadow_[i].scalar_type(), shadow_[i].sizes(), " on ",
                shadow_[i].device());
  }
}

void EMA::update(const std::vector<at::Tensor>& params) {
  check_params(params, "update");
  const double d = next_decay();
  ++num_updates_;
  if (shadow_.empty()) return;
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> detached;
  detached.reserve(params.size());
  for (const auto& p : params) detached.push_back(p.detach());
  at::_foreach_mul_(shadow_, d);
  at::_foreach_add_(shadow_, detached, 1.0 - d);
}

void EMA::copy_to(const std::vector<at::Tensor>& params) const {
  check_params(params, "copy_to");
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) params[i].copy_(shadow_[i]);
}

NamedTensors EMA::state() const {
  NamedTensors out;
  out.reserve(shadow_.size() + 1);
  for (size_t i = 0; i < shadow_.size(); ++i) out.emplace_back(names_[i], shadow_[i]);
  out.emplace_back(kNumUpdatesKey, at::scalar_tensor(num_updates_, at::kLong));
  return out;
}

void EMA::load_state(const NamedTensors& state) {
  std::map<std::string, at::Tensor> by_name(state.begin(), state.end());
  auto count = by_name.find(kNumUpdatesKey);
  if (count == by_name.end()) {
    throw std::invalid_argument(lf::str("EMA state: key '", kNumUpdatesKey, "' is missing"));
  }
  if (count->second.numel() != 1) {
    throw std::invalid_argument(lf::str("EMA state: '", kNumUpdatesKey,
                                        "' must hold one integer, got shape ",
                                        count->second.sizes()));
  }
  for (size_t i = 0; i < names_.size(); ++i) {
    auto it = by_name.find(names_[i]);
    if (it == by_name.end()) {
      throw std::invalid_argument(lf::str("EMA state: key '", names_[i], "' is missing"));
    }
    if (it->second.sizes() != shadow_[i].sizes()) {
      throw std::invalid_argument(lf::str("EMA state: key '", names_[i], "' has shape ",
                                          it->second.sizes(), ", the model's is ",
                                          shadow_[i].sizes()));
    }
  }
  if (by_name.size() != names_.size() + 1) {
    for (const auto& [name, tensor] : by_name) {
      if (name != kNumUpdatesKey &&
          std::find(names_.begin(), names_.end(), name) == names_.end()) {
        throw std::invalid_argument(
            lf::str("EMA state: key '", name, "' is not a parameter of this model"));
      }
    }
  }
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < names_.size(); ++i) shadow_[i].copy_(by_name[names_[i]]);
  num_updates_ = count->second.to(at::kLong).item<int64_t>();
}

}  // namespace lf::core
