// Module state dicts and a loader that lists every mismatch (see state_dict.h).
#include "core/state_dict.h"

#include <stdexcept>

#include "core/util/strings.h"

namespace lf::core {
namespace {

std::string shape_of(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

// Live (non-detached) handles, so copy_ under NoGradGuard writes into the module.
TensorMap live_tensors(const torch::nn::Module& module) {
  TensorMap out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) out.emplace(p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/true)) {
    if (!b.value().defined()) continue;
    if (!out.emplace(b.key(), b.value()).second)
      throw std::logic_error(lf::str("state_dict: '", b.key(), "' is both a parameter and a buffer"));
  }
  return out;
}

}  // namespace

TensorMap state_dict(const torch::nn::Module& module) {
  TensorMap out = live_tensors(module);
  for (auto& [name, t] : out) t = t.detach();
  return out;
}

StateDictReport load_state_dict(torch::nn::Module& module, const TensorMap& tensors, bool strict,
                                const std::string& source) {
  const TensorMap own = live_tensors(module);
  StateDictReport report;
  std::vector<std::string> mismatched;
  for (const auto& [name, t] : own) {
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      report.missing.push_back(name);
    } else if (!it->second.defined() || it->second.sizes() != t.sizes()) {
      mismatched.push_back(lf::str(name, " (expected ", shape_of(t), ", found ",
                               it->second.defined() ? shape_of(it->second) : "undefined", ")"));
    }
  }
  for (const auto& [name, t] : tensors)
    if (!own.count(name)) report.unexpected.push_back(name);

  const bool fail = !mismatched.empty() ||
                    (strict && (!report.missing.empty() || !report.unexpected.empty()));
  if (fail) {
    std::string msg = lf::str(source.empty() ? std::string("state dict") : source,
                          ": cannot load into the model:");
    auto list = [&](const char* what, const std::vector<std::string>& keys) {
      if (keys.empty()) return;
      msg += lf::str("\n  ", keys.size(), " ", what, ": ", join(keys, ", "));
    };
    list("shape mismatches", mismatched);
    if (strict) {
      list("missing keys", report.missing);
      list("unexpected keys", report.unexpected);
    }
    if (strict && !report.missing.empty() && !report.unexpected.empty()) {
      const std::string guess = closest_match(report.unexpected.front(), report.missing);
      if (!guess.empty())
        msg += lf::str("\n  hint: unexpected '", report.unexpected.front(), "' resembles missing '",
                   guess, "'; are the weights from another model layout or version?");
    }
    throw std::invalid_argument(msg);
  }
  torch::NoGradGuard no_grad;
  for (const auto& [name, t] : own) {
    auto it = tensors.find(name);
    if (it != tensors.end()) t.copy_(it->second);
  }
  return report;
}

int64_t count_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters(/*recurse=*/true)) n += p.numel();
  return n;
}

}  // namespace lf::core
