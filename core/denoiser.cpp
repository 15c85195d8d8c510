// The denoiser interface's shared input checks and kind names (see denoiser.h).
#include "core/denoiser.h"

#include <stdexcept>

#include "core/util/strings.h"

namespace lf::core {

const EnumTable<DenoiserKind>& denoiser_kinds() {
  static const EnumTable<DenoiserKind> table = {{"unet", DenoiserKind::kUNet}, {"dit", DenoiserKind::kDiT}};
  return table;
}

std::string model_key(const std::string& field) { return lf::str("model.", field); }

void check_time_and_labels(const char* model, const at::Tensor& x, const at::Tensor& t,
                           const at::Tensor& y, int64_t num_classes) {
  if (!t.defined() || !(t.dim() == 0 || (t.dim() == 1 && t.size(0) == x.size(0))))
    throw std::invalid_argument(lf::str(model, ": timesteps have shape ",
                                        t.defined() ? lf::str(t.sizes()) : "undefined",
                                        ", expected [", x.size(0), "] (one per sample) or a scalar"));
  if (num_classes == 0) {
    if (y.defined())
      throw std::invalid_argument(lf::str(model, ": labels given to an unconditional model (num_classes = 0)"));
    return;
  }
  if (!y.defined()) return;
  if (y.dim() != 1 || y.size(0) != x.size(0) || y.scalar_type() != at::kLong)
    throw std::invalid_argument(lf::str(model, ": labels have shape ", y.sizes(), " and dtype ",
                                        y.scalar_type(), ", expected [", x.size(0), "] int64"));
  // Range check only where it costs no device synchronisation.
  if (y.is_cpu() && y.numel() > 0) {
    const int64_t lo = y.min().item<int64_t>(), hi = y.max().item<int64_t>();
    if (lo < 0 || hi > num_classes)
      throw std::invalid_argument(lf::str(model, ": labels range over [", lo, ", ", hi, "], expected [0, ",
                                          num_classes, "] (", num_classes, " = the null class)"));
  }
}

at::Tensor batch_times(const at::Tensor& t, const at::Tensor& x) {
  const int64_t n = x.size(0);
  return (t.dim() == 0 ? t.reshape({1}).expand({n}) : t).to(x.device());
}

at::Tensor labels_or_null(const at::Tensor& y, const at::Tensor& x, int64_t num_classes) {
  if (y.defined()) return y.to(x.device());
  return at::full({x.size(0)}, num_classes, at::TensorOptions().dtype(at::kLong).device(x.device()));
}

}  // namespace lf::core
