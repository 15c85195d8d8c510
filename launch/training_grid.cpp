// Training-time sample grids (see training_grid.h).
#include "launch/training_grid.h"

#include <filesystem>

#include "core/util/tokenizer.h"
#include "core/util/png.h"
#include "core/util/strings.h"
#include "launch/checkpoint.h"
#include "launch/generate.h"

namespace fs = std::filesystem;

namespace lf::launch {

std::vector<std::string> class_row_labels(const std::vector<int64_t>& classes, const std::vector<std::string>& names) {
  std::vector<std::string> out;
  for (int64_t k : classes)
    out.push_back(k >= 0 && k < static_cast<int64_t>(names.size()) && !names[k].empty() ? names[k] : str("class ", k));
  return out;
}

at::Tensor prompt_tokens(const std::vector<std::string>& prompts, int64_t context_length) {
  return lf::ByteTokenizer(context_length).encode(prompts).tokens;
}

std::string write_training_grid(core::DenoiserModule& model, const LDMObjective& objective, Autoencoder& autoencoder,
                                const std::vector<int64_t>& latent_shape, double scale, const TrainingGridOptions& o,
                                const std::string& run_dir, int64_t step) {
  const int64_t num_classes = model.num_classes();
  const bool text = model.context_length() > 0;
  if (text && o.prompts.empty()) throw std::invalid_argument("a text model's training grid needs prompts");
  auto [ids, labels] = grid_labels(text ? static_cast<int64_t>(o.prompts.size()) : num_classes, o.per_class);
  core::TextInput captions;
  if (text) {
    const at::Tensor rows = at::arange(static_cast<int64_t>(o.prompts.size()), at::kLong).repeat_interleave(o.per_class);
    if (o.prompt_embeddings.embeddings.defined())
      captions = o.prompt_embeddings.rows(rows);
    else
      captions.tokens = prompt_tokens(o.prompts, model.context_length()).index_select(0, rows);
  }
  GenerateOptions g;
  g.sampler = objective.is_flow() ? core::SamplerKind::kEuler : core::SamplerKind::kDDIM;
  g.steps = o.steps;
  g.guidance = o.guidance;
  g.seed = o.seed;
  at::Tensor z = generate_latents(model, objective, ids, labels, latent_shape, g, {}, captions);
  autoencoder.to(z.device());
  at::Tensor images = autoencoder.decode(z.to(at::kFloat) / scale).cpu();
  std::vector<int64_t> classes;
  for (int64_t k = 0; k < num_classes; ++k) classes.push_back(k);
  std::vector<std::string> rows = text ? o.prompts : class_row_labels(classes, o.label_names);
  fs::create_directories(fs::path(run_dir) / "samples");
  std::string path = (fs::path(run_dir) / "samples" / (CheckpointManager::name_for_step(step) + ".png")).string();
  write_png_grid(path, images, o.per_class, rows);
  write_png_grid((fs::path(run_dir) / "grid.png").string(), images, o.per_class, rows);
  return path;
}

}  // namespace lf::launch
