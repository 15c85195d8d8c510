// AdamW, fused on CPU (see adamw.h). The arithmetic per element follows PyTorch's
// _multi_tensor_adamw: p *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
// p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps).
#include "core/adamw.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <sstream>
#include <stdexcept>

#include "core/util/strings.h"

namespace lf::core {

namespace {

template <class T>
void fused_update(at::Tensor& p, const at::Tensor& g, at::Tensor& m, at::Tensor& v, double lr,
                  double b1, double b2, double eps, double wd, double bc1, double bc2_sqrt, double grad_scale) {
  T* pp = p.data_ptr<T>();
  const T* gp = g.data_ptr<T>();
  T* mp = m.data_ptr<T>();
  T* vp = v.data_ptr<T>();
  const T decay = static_cast<T>(1.0 - lr * wd);
  const T one_m_b1 = static_cast<T>(1.0 - b1), one_m_b2 = static_cast<T>(1.0 - b2);
  const T tb1 = static_cast<T>(b1), tb2 = static_cast<T>(b2);
  const T step_size = static_cast<T>(lr / bc1);
  const T inv_bc2 = static_cast<T>(bc2_sqrt);
  const T teps = static_cast<T>(eps);
  const T gs = static_cast<T>(grad_scale);
  // Captured by value: the loop then reads no scalar through a reference that a store to p, m
  // or v could alias, so the compiler vectorises it (with -fno-math-errno for the sqrt, see
  // core/CMakeLists.txt); the arithmetic per element is unchanged.
  at::parallel_for(0, p.numel(), 16384, [=](int64_t begin, int64_t end) {
    T* __restrict__ pr = pp;
    T* __restrict__ mr = mp;
    T* __restrict__ vr = vp;
    const T* __restrict__ gr = gp;
    for (int64_t i = begin; i < end; ++i) {
      T gi = gr[i] * gs;
      T mi = tb1 * mr[i] + one_m_b1 * gi;
      T vi = tb2 * vr[i] + one_m_b2 * gi * gi;
      mr[i] = mi;
      vr[i] = vi;
      T denom = std::sqrt(vi) / inv_bc2 + teps;
      pr[i] = pr[i] * decay - step_size * (mi / denom);
    }
  });
}

}  // namespace

AdamW::AdamW(Named params, AdamWOptions options) : params_(std::move(params)), options_(options) {
  for (auto& [name, p] : params_) {
    exp_avg_.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
    exp_avg_sq_.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
  }
}

void AdamW::step(double lr, double grad_scale) {
  at::NoGradGuard no_grad;
  ++step_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(step_));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(b2, static_cast<double>(step_)));
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor& p = params_[i].second;
    at::Tensor g = p.grad();
    if (!g.defined()) continue;
    at::Tensor& m = exp_avg_[i];
    at::Tensor& v = exp_avg_sq_[i];
    if (p.device().is_cpu() && p.is_contiguous() && g.is_contiguous() &&
        (p.scalar_type() == at::kFloat || p.scalar_type() == at::kDouble) && g.scalar_type() == p.scalar_type()) {
      if (p.scalar_type() == at::kFloat)
        fused_update<float>(p, g, m, v, lr, b1, b2, options_.eps, options_.weight_decay, bc1, bc2_sqrt, grad_scale);
      else
        fused_update<double>(p, g, m, v, lr, b1, b2, options_.eps, options_.weight_decay, bc1, bc2_sqrt, grad_scale);
    } else {
      if (grad_scale != 1.0) g = g * grad_scale;
      p.mul_(1.0 - lr * options_.weight_decay);
      m.mul_(b1).add_(g, 1.0 - b1);
      v.mul_(b2).addcmul_(g, g, 1.0 - b2);
      at::Tensor denom = (v.sqrt() / bc2_sqrt).add_(options_.eps);
      p.addcdiv_(m, denom, -lr / bc1);
    }
  }
}

AdamW::Named AdamW::state() const {
  Named out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back("exp_avg." + params_[i].first, exp_avg_[i]);
    out.emplace_back("exp_avg_sq." + params_[i].first, exp_avg_sq_[i]);
  }
  out.emplace_back("step", at::scalar_tensor(step_, at::kLong));
  return out;
}

void AdamW::load_state(const std::map<std::string, at::Tensor>& state) {
  std::vector<std::string> problems;
  auto take = [&](const std::string& key, at::Tensor& dst) {
    auto it = state.find(key);
    if (it == state.end()) {
      problems.push_back("missing " + key);
      return;
    }
    if (it->second.sizes() != dst.sizes()) {
      std::ostringstream os;
      os << key << " has shape " << it->second.sizes() << ", expected " << dst.sizes();
      problems.push_back(os.str());
      return;
    }
    at::NoGradGuard g;
    dst.copy_(it->second);
  };
  for (size_t i = 0; i < params_.size(); ++i) {
    take("exp_avg." + params_[i].first, exp_avg_[i]);
    take("exp_avg_sq." + params_[i].first, exp_avg_sq_[i]);
  }
  auto it = state.find("step");
  if (it == state.end()) problems.push_back("missing step");
  if (!problems.empty())
    throw std::invalid_argument("optimizer state does not match the model: " + join(problems, "; "));
  step_ = it->second.item<int64_t>();
}

double global_grad_norm(const std::vector<at::Tensor>& params) {
  // Per-tensor norms in the gradients' own dtype (one pass each, no copies), combined in
  // float64, as torch.nn.utils.clip_grad_norm_ does.
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> norms;
  norms.reserve(params.size());
  for (const auto& p : params) {
    const at::Tensor& g = p.grad();
    if (g.defined()) norms.push_back(at::norm(g).to(at::kDouble));
  }
  if (norms.empty()) return 0.0;
  return at::stack(norms).norm().item<double>();
}

void clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm, double norm) {
  if (max_norm <= 0) return;
  double coef = max_norm / (norm + 1e-6);
  if (coef >= 1.0) return;
  at::NoGradGuard no_grad;
  for (const auto& p : params) {
    at::Tensor g = p.grad();
    if (g.defined()) g.mul_(coef);
  }
}

}  // namespace lf::core
