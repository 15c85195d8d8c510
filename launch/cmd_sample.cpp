// `latentforge sample`: generates images from a trained checkpoint (EMA weights by default)
// with DDIM or DDPM (a DDPM-objective model) or Euler or Heun (a flow model) and
// classifier-free guidance, decodes them with the checkpoint's VAE and
// writes grid.png (one row per class, labelled with its name) and samples.h5 (images N,C,H,W uint8 + labels).
// Sample i's noise is keyed by (sample.seed, i): batch size never changes the images.
#include <glog/logging.h>

#include <filesystem>

#include "core/util/png.h"
#include "core/util/progress.h"
#include "core/util/strings.h"
#include "data/samples_file.h"
#include "launch/checkpoint_model.h"
#include "launch/generate.h"
#include "launch/subcommands.h"
#include "launch/training_grid.h"

namespace fs = std::filesystem;

namespace lf::launch {

namespace {

// sample.classes: "all" or a comma-separated list of class ids below num_classes.
std::vector<int64_t> parse_classes(const std::string& spec, int64_t num_classes) {
  std::vector<int64_t> out;
  if (num_classes == 0) return {0};
  if (trim(spec) == "all") {
    for (int64_t k = 0; k < num_classes; ++k) out.push_back(k);
    return out;
  }
  for (const auto& part : split(spec, ',')) {
    char* end = nullptr;
    std::string p = trim(part);
    long long v = std::strtoll(p.c_str(), &end, 10);
    if (p.empty() || *end != '\0' || v < 0 || v >= num_classes)
      throw UsageError(str("sample.classes = '", spec, "': '", p, "' is not a class id in [0, ", num_classes - 1,
                           "] (or use all)"));
    out.push_back(v);
  }
  return out;
}

}  // namespace

int run_sample(const Invocation& inv) {
  const SampleConfig& s = inv.config.sample();
  std::string ckpt_path = s.checkpoint.empty() ? inv.config.value("train.run_dir") : s.checkpoint;
  TrainedModel m = load_trained_model(ckpt_path, s.use_ema, inv.config.value("vae.weights"));
  const int64_t num_classes = m.model->num_classes();
  std::vector<int64_t> classes = parse_classes(s.classes, num_classes);
  const LDMObjective objective(m.diffusion);
  std::string out_dir = s.out_dir;
  if (out_dir.empty()) out_dir = (fs::path(m.checkpoint).parent_path().parent_path() / "samples").string();
  fs::create_directories(out_dir);

  // Sample i has class classes[i % K]: any N covers the classes evenly.
  const int64_t n = s.num, k = static_cast<int64_t>(classes.size());
  at::Tensor ids = at::arange(n, at::kLong);
  at::Tensor labels = at::tensor(classes, at::kLong).index({ids % k});
  GenerateOptions g;
  g.sampler = s.sampler;
  g.steps = s.steps;
  g.eta = s.sampler == core::SamplerKind::kDDPM ? 1.0 : s.eta;
  g.spacing = s.spacing;
  g.guidance = s.guidance;
  g.seed = static_cast<uint64_t>(s.seed);
  g.batch_size = s.batch_size;
  LOG(INFO) << "sampling " << n << " images from " << m.checkpoint << " (step " << m.step << ", "
            << (s.use_ema ? "EMA" : "raw") << " weights): " << core::to_string(s.sampler) << " " << s.steps << " steps, guidance "
            << s.guidance << ", seed " << s.seed << ", " << (num_classes ? str(k, " class(es)") : "unconditional");
  Progress progress("sample", n, "images");
  at::Tensor z = generate_latents(*m.model, objective, ids, labels, m.latent_shape, g,
                                  [&](int64_t done, int64_t) { progress.update(done); });
  progress.finish();
  at::Tensor images = m.autoencoder.decode(z / m.scale_factor, s.batch_size);
  at::Tensor u8 = ((images.clamp(-1, 1) + 1) * 127.5).round().to(at::kByte);

  std::string h5 = (fs::path(out_dir) / "samples.h5").string();
  data::write_samples_file(h5, u8, num_classes > 0 ? labels : at::full({n}, -1, at::kLong), m.label_names);
  // The grid: one row per class, up to 10 samples each.
  int64_t per_row = std::min<int64_t>(10, std::max<int64_t>(1, n / k));
  std::vector<at::Tensor> rows;
  for (int64_t c = 0; c < k; ++c) {
    // Fewer samples than classes leave the last rows empty (padding).
    at::Tensor idx = at::arange(c, std::max(c, std::min(n, c + per_row * k)), k, at::kLong);
    at::Tensor row = images.index_select(0, idx);
    if (row.size(0) < per_row)
      row = at::cat({row, at::full({per_row - row.size(0), images.size(1), images.size(2), images.size(3)}, -1.0)});
    rows.push_back(row);
  }
  std::string grid = (fs::path(out_dir) / "grid.png").string();
  write_png_grid(grid, at::cat(rows), per_row, num_classes > 0 ? class_row_labels(classes, m.label_names)
                                                               : std::vector<std::string>{});
  LOG(INFO) << "wrote " << grid << " (" << k << " row(s) x " << per_row << ") and " << h5 << " (" << n << " images)";
  std::cout << "grid: " << grid << "\nsamples: " << h5 << std::endl;
  return 0;
}

}  // namespace lf::launch
