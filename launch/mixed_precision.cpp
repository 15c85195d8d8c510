// Precision policy, autocast and dynamic loss scaling (see mixed_precision.h).
#include "launch/mixed_precision.h"

#include <ATen/autocast_mode.h>
#include <sys/sysinfo.h>
#include <torch/version.h>

#include "core/adamw.h"
#include "core/util/strings.h"

namespace lf::launch {

namespace {

void set_cuda_autocast(bool on, at::ScalarType dtype) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_dtype(at::kCUDA, dtype);
  at::autocast::set_autocast_enabled(at::kCUDA, on);
#else
  at::autocast::set_autocast_gpu_dtype(dtype);
  at::autocast::set_enabled(on);
#endif
}

at::ScalarType g_autocast_dtype = at::kBFloat16;

}  // namespace

const EnumTable<Precision>& precisions() {
  static const EnumTable<Precision> table = {
      {"f32", Precision::kF32}, {"f64", Precision::kF64}, {"bf16", Precision::kBF16}, {"f16", Precision::kF16}};
  return table;
}

std::string describe(Precision p) {
  switch (p) {
    case Precision::kBF16: return "bf16 autocast";
    case Precision::kF16: return "f16 autocast + loss scaling";
    default: return precisions().name(p);
  }
}

Precision resolve_precision(const std::string& value, at::Device device, const std::string& key) {
  bool cuda = device.is_cuda();
  if (value == "auto") return cuda ? Precision::kBF16 : Precision::kF32;
  Precision p = precisions().parse(value, key);
  if (p == Precision::kF64 && cuda)
    throw std::invalid_argument(str(key, " = f64 is for CPU exactness tests; use f32, bf16 or f16 on CUDA"));
  if ((p == Precision::kBF16 || p == Precision::kF16) && !cuda)
    throw std::invalid_argument(str(key, " = ", value, " needs a CUDA device; on CPU use f32 or f64"));
  return p;
}

bool decide_in_memory(const std::string& value, int64_t cache_bytes) {
  if (value == "true") return true;
  if (value == "false") return false;
  struct sysinfo si {};
  if (sysinfo(&si) != 0) return false;
  double ram = static_cast<double>(si.totalram) * si.mem_unit;
  return static_cast<double>(cache_bytes) * 2.5 < ram / 4;  // float32 copies of f16 rows
}

MixedPrecision::MixedPrecision(Precision p, at::Device device) : precision_(p) {
  autocast_ = device.is_cuda() && (p == Precision::kBF16 || p == Precision::kF16);
  if (p == Precision::kF16) scale_ = 65536.0;
  g_autocast_dtype = p == Precision::kF16 ? at::kHalf : at::kBFloat16;
}

MixedPrecision::Guard::Guard(bool a) : active(a) {
  if (active) set_cuda_autocast(true, g_autocast_dtype);
}

MixedPrecision::Guard::~Guard() {
  if (active) {
    set_cuda_autocast(false, g_autocast_dtype);
    at::autocast::clear_cache();
  }
}

void MixedPrecision::backward(const at::Tensor& loss) {
  if (precision_ == Precision::kF16)
    (loss * scale_).backward();
  else
    loss.backward();
}

double MixedPrecision::unscale_and_norm(const std::vector<at::Tensor>& params) {
  if (precision_ == Precision::kF16) {
    at::NoGradGuard g;
    for (const auto& p : params)
      if (p.grad().defined()) p.grad().div_(scale_);
  }
  return core::global_grad_norm(params);
}

void MixedPrecision::update(bool finite) {
  if (precision_ != Precision::kF16) return;
  if (!finite) {
    scale_ = std::max(1.0, scale_ * 0.5);
    good_steps_ = 0;
  } else if (++good_steps_ >= 2000) {
    scale_ *= 2.0;
    good_steps_ = 0;
  }
}

}  // namespace lf::launch
