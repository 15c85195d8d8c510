// The interface every denoising network presents to the training loop and the samplers (the
// ADM UNet, the DiT): forward(x_t, t, y), class conditioning with a null class for
// classifier-free guidance, caller-supplied dropout masks, and the spatial size it needs.
#pragma once
#include <torch/nn/module.h>

#include <cstdint>
#include <functional>
#include <string>

#include "core/text_conditioning.h"
#include "core/util/enum_table.h"

namespace lf::core {

// Which network denoises.
enum class DenoiserKind { kUNet, kDiT };
const EnumTable<DenoiserKind>& denoiser_kinds();  // "unet", "dit"
inline const std::string& to_string(DenoiserKind kind) { return denoiser_kinds().name(kind); }

// The config key of a [model] field, "model.<field>", as validation messages name it. The keys
// of the DiT (kind, patch_size, depth, width, heads, mlp_ratio, preset) are spelled here before
// the config registers them.
std::string model_key(const std::string& field);

// Dropout masks supplied by the caller so that no draw comes from a per-rank stream: called
// once per dropout layer forward in training with dropout > 0, with the layer's id (0, 1, ...
// in construction order) and the activation's shape [N, ...]. Returns a keep-mask of that
// shape: bool (kept entries are scaled by 1 / (1 - dropout) by the network), or floating point,
// used as given (so it must hold 0 and 1 / (1 - dropout) for inverted dropout).
using DropoutMasks = std::function<at::Tensor(int64_t layer_id, at::IntArrayRef shape)>;

// A denoising network on latents [N, C, H, W]. The time input t is [N] (or a scalar for the
// whole batch), integer or floating, on the DDPM scale: the DDPM objective passes its integer
// step in [0, T); the flow objective passes 1000 t for its continuous t in [0, 1]
// (FlowMatching::model_time), so both use the same sinusoidal embedding with its usual
// frequencies. Labels y are int64 [N] in [0, num_classes()] where num_classes() is the null
// (dropped) class; undefined y means all null. A conditional model and the launch code hold
// either network as std::shared_ptr<DenoiserModule> (see core/denoiser_options.h).
class DenoiserModule : public torch::nn::Module {
 public:
  // Returns [N, out_channels(), H, W]. `text` conditions a text model (context_length() > 0;
  // undefined tokens: the null condition for all) and must be empty otherwise. Throws
  // std::invalid_argument for bad shapes, labels or tokens.
  virtual at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y = {},
                             const TextInput& text = {}) = 0;

  virtual DenoiserKind kind() const = 0;
  virtual int64_t in_channels() const = 0;
  virtual int64_t out_channels() const = 0;
  // 0: unconditional (labels must be undefined).
  virtual int64_t num_classes() const = 0;
  // Tokens per caption of a text-conditioned model; 0 without text conditioning.
  virtual int64_t context_length() const = 0;
  // A text model of external caption embeddings: their size D (it reads TextInput::embeddings
  // [N, context_length(), D] and mask); 0 for the joint encoder (it reads tokens).
  virtual int64_t text_embedding_dim() const = 0;
  // H and W of the input must be positive multiples of this.
  virtual int64_t size_multiple() const = 0;

  // Dropout probability of the layers that ask for masks, and how many such layers there are
  // (ids 0 .. num_dropout_layers() - 1). Networks without dropout return 0 and 0.
  virtual double dropout() const = 0;
  virtual int64_t num_dropout_layers() const = 0;
  // Sets (or clears, with nullptr) the mask source; required in training when dropout() > 0.
  virtual void set_dropout_masks(DropoutMasks masks) = 0;
};

// Checks of the time and label inputs shared by the networks; `model` prefixes the messages
// ("UNet", "DiT"). t: [N] or a scalar; y: see DenoiserModule. Throws std::invalid_argument.
void check_time_and_labels(const char* model, const at::Tensor& x, const at::Tensor& t,
                           const at::Tensor& y, int64_t num_classes);

// t [N] or a scalar as [N] on x's device; y, or the null class for all when undefined (only
// for num_classes > 0), as int64 [N] on x's device.
at::Tensor batch_times(const at::Tensor& t, const at::Tensor& x);
at::Tensor labels_or_null(const at::Tensor& y, const at::Tensor& x, int64_t num_classes);

}  // namespace lf::core
