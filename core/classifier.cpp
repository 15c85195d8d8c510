// Small CNN classifier (see classifier.h).
#include "core/classifier.h"

#include <torch/nn/modules/container/modulelist.h>

#include <stdexcept>

#include "core/util/strings.h"

namespace lf::core {
namespace {

constexpr int64_t kStages = 3, kGroups = 8;
// The last stage is pooled to a 4x4 map and flattened: keeping where features are (not only
// which) is what a garment classifier needs; global average pooling cost ~3 points of accuracy.
constexpr int64_t kPooledSide = 4;

}  // namespace

void ClassifierOptions::validate() const {
  std::vector<std::string> errors;
  auto positive = [&](const char* name, int64_t v, int64_t min) {
    if (v < min) errors.push_back(lf::str("classifier.", name, " = ", v, " (must be >= ", min, ")"));
  };
  positive("in_channels", in_channels, 1);
  positive("num_classes", num_classes, 2);
  positive("width", width, kGroups);
  positive("feature_dim", feature_dim, 1);
  if (width >= kGroups && width % kGroups != 0)
    errors.push_back(lf::str("classifier.width = ", width, " is not a multiple of ", kGroups, " (GroupNorm groups)"));
  if (!errors.empty()) throw std::invalid_argument("invalid classifier options: " + join(errors, "; "));
}

ClassifierImpl::ClassifierImpl(ClassifierOptions options) : options_(std::move(options)) {
  options_.validate();
  using namespace torch::nn;
  convs = register_module("convs", ModuleList());
  norms = register_module("norms", ModuleList());
  int64_t in = options_.in_channels;
  for (int64_t stage = 0; stage < kStages; ++stage) {
    const int64_t out = options_.width << stage;
    for (int i = 0; i < 2; ++i) {
      convs->push_back(Conv2d(Conv2dOptions(in, out, 3).padding(1).bias(false)));
      norms->push_back(GroupNorm(GroupNormOptions(kGroups, out)));
      in = out;
    }
  }
  feature = register_module("feature", Linear(in * kPooledSide * kPooledSide, options_.feature_dim));
  head = register_module("head", Linear(options_.feature_dim, options_.num_classes));
}

at::Tensor ClassifierImpl::features(const at::Tensor& x) {
  if (x.dim() != 4 || x.size(1) != options_.in_channels || x.size(2) < 4 || x.size(3) < 4)
    throw std::invalid_argument(lf::str("Classifier: input has shape ", x.sizes(), ", expected [N, ",
                                        options_.in_channels, ", H, W] with H, W >= 4"));
  at::Tensor h = x;
  for (int64_t i = 0; i < static_cast<int64_t>(convs->size()); ++i) {
    h = at::relu(norms[i]->as<torch::nn::GroupNorm>()->forward(convs[i]->as<torch::nn::Conv2d>()->forward(h)));
    if (i % 2 == 1 && i + 1 < static_cast<int64_t>(convs->size())) h = at::max_pool2d(h, {2, 2});
  }
  return at::relu(feature(at::adaptive_avg_pool2d(h, {kPooledSide, kPooledSide}).flatten(1)));
}

at::Tensor ClassifierImpl::forward(const at::Tensor& x) { return head(features(x)); }

}  // namespace lf::core
