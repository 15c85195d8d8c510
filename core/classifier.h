// A small CNN image classifier for evaluation: its 128-wide penultimate features give the
// Fréchet distance of generated images, its logits their class accuracy.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cstdint>

namespace lf::core {

struct ClassifierOptions {
  int64_t in_channels = 1;   // image channels
  int64_t num_classes = 10;  // logits
  int64_t width = 32;        // channels of the first stage; x2 per stage (3 stages)
  int64_t feature_dim = 128; // width of the penultimate (feature) layer
  // Throws std::invalid_argument naming every bad field, its value and the allowed range.
  void validate() const;
};

// Three stages of two 3x3 conv + GroupNorm + ReLU (max-pool 2x2 between stages), global
// average pooling, a feature layer (Linear + ReLU), then Linear logits. Any H, W >= 4 (32x32 in
// the quickstart). No dropout, and GroupNorm instead of BatchNorm, so outputs depend on each
// sample alone and no random stream is drawn.
class ClassifierImpl : public torch::nn::Module {
 public:
  explicit ClassifierImpl(ClassifierOptions options = {});  // validates options
  // [N, feature_dim] penultimate activations of x [N, in_channels, H, W].
  at::Tensor features(const at::Tensor& x);
  // [N, num_classes] logits.
  at::Tensor forward(const at::Tensor& x);
  const ClassifierOptions& options() const { return options_; }

  torch::nn::ModuleList convs{nullptr}, norms{nullptr};
  torch::nn::Linear feature{nullptr}, head{nullptr};

 private:
  ClassifierOptions options_;
};
TORCH_MODULE(Classifier);

}  // namespace lf::core
