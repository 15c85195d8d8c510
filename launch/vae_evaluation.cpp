// Autoencoder quality (see vae_evaluation.h).
#include "launch/vae_evaluation.h"

#include <glog/logging.h>

#include <filesystem>

#include "core/diffusers_vae.h"
#include "core/image_metrics.h"
#include "core/util/fs.h"
#include "core/util/png.h"

namespace fs = std::filesystem;

namespace lf::launch {

ReconstructionQuality reconstruction_quality(core::VAE& vae, const at::Tensor& images, int64_t batch) {
  at::NoGradGuard g;
  bool was = vae->is_training();
  vae->eval();
  std::vector<at::Tensor> recs;
  for (int64_t i = 0; i < images.size(0); i += batch) {
    at::Tensor x = images.narrow(0, i, std::min(batch, images.size(0) - i));
    recs.push_back(vae->decode(vae->encode(x).mode()).clamp(-1, 1));
  }
  if (was) vae->train();
  ReconstructionQuality q;
  q.reconstructions = at::cat(recs);
  at::Tensor a = (images.to(at::kDouble) + 1) / 2, b = (q.reconstructions.to(at::kDouble) + 1) / 2;
  q.psnr = core::mean_psnr(a, b);
  q.ssim = a.size(2) >= 11 ? core::ssim(a, b).mean().item<double>() : NAN;
  q.count = images.size(0);
  return q;
}

nlohmann::json evaluate_vae(core::VAE& vae, const at::Tensor& held_out, const std::string& run_dir, int64_t step,
                            bool final) {
  auto q = reconstruction_quality(vae, held_out);
  LOG(INFO) << "step " << step << ": held-out PSNR " << q.psnr << " dB, SSIM " << q.ssim << " on " << q.count
            << " images";
  int64_t show = std::min<int64_t>(16, q.count);
  at::Tensor pic = at::cat({held_out.narrow(0, 0, show), q.reconstructions.narrow(0, 0, show)});
  write_png_grid((fs::path(run_dir) / "reconstructions.png").string(), pic.cpu().to(at::kFloat), show);
  nlohmann::json m = {{"step", step}, {"psnr", q.psnr}, {"ssim", q.ssim}, {"eval_images", q.count}};
  if (final) {
    fs::path out = fs::path(run_dir) / "vae";
    core::save_diffusers_vae(vae, out.string());
    atomic_write_file((fs::path(run_dir) / "vae_metrics.json").string(), m.dump(2) + "\n");
    LOG(INFO) << "VAE written to " << out.string() << " (diffusers AutoencoderKL layout); reconstructions in "
              << (fs::path(run_dir) / "reconstructions.png").string();
  }
  return m;
}

}  // namespace lf::launch
