// The stage device on a GPU: pinned uploads on the copy stream and background downloads give
// the bytes they were given; the one-batch-in-flight pipeline gives the CPU loop's results in
// the same order; a UNet + sampler and a VAE encode on the GPU in f32 agree with the CPU within
// float32 tolerance, and under bf16 autocast within bf16's. Each test skips, saying why, where
// no CUDA device is usable (every CPU-only build).
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "core/diffusion.h"
#include "core/unet.h"
#include "core/vae.h"
#include "launch/autoencoder.h"
#include "launch/generate.h"
#include "launch/stage_device.h"

namespace lf::launch {
namespace {

#define LF_REQUIRE_CUDA()                                                                                    \
  if (!torch::cuda::is_available())                                                                          \
  GTEST_SKIP() << "no CUDA device: this LibTorch is CPU-only or no GPU is visible (the CUDA build runs these " \
                  "on a GPU machine)"

TEST(StageDeviceGPU, UploadDownloadRoundTripIsExact) {
  LF_REQUIRE_CUDA();
  StageDevice dev = stage_device(at::Device(at::kCUDA, 0), "auto", "sample.precision");
  EXPECT_EQ(dev.precision(), Precision::kBF16);
  at::manual_seed(0);
  at::Tensor bytes = at::randint(0, 256, {64, 3, 32, 32}, at::kByte);
  at::Tensor floats = at::randn({64, 4, 8, 8});
  at::Tensor up_b = dev.upload(bytes), up_f = dev.upload(floats);
  EXPECT_TRUE(up_b.is_cuda());
  EXPECT_EQ(up_b.scalar_type(), at::kByte);
  HostResult back = dev.download({up_b, up_f * 1});
  back.wait();
  EXPECT_TRUE(back.tensors[0].is_pinned());
  EXPECT_TRUE(back.tensors[0].equal(bytes));
  EXPECT_TRUE(back.tensors[1].equal(floats));
}

TEST(StageDeviceGPU, PipelineGivesTheCpuLoopsResultsInOrder) {
  LF_REQUIRE_CUDA();
  StageDevice gpu = stage_device(at::Device(at::kCUDA, 0), "f32", "eval.precision");
  StageDevice cpu = stage_device(at::Device(at::kCPU), "f32", "eval.precision");
  at::manual_seed(1);
  at::Tensor w = at::randn({256, 256});
  at::Tensor w_gpu = w.cuda();
  std::vector<at::Tensor> inputs;
  for (int k = 0; k < 9; ++k) inputs.push_back(at::randint(0, 256, {128, 256}, at::kByte));
  auto run = [&](const StageDevice& dev, const at::Tensor& weight) {
    std::vector<at::Tensor> out;
    std::vector<int64_t> order;
    dev.pipeline(
        9, [&](int64_t k) { return inputs[k]; },
        [&](const at::Tensor& x) {
          at::Tensor h = x.to(at::kFloat) / 255.0;
          for (int i = 0; i < 20; ++i) h = at::tanh(h.mm(weight));  // enough work to overlap
          return std::vector<at::Tensor>{h};
        },
        [&](int64_t k, std::vector<at::Tensor>& r) {
          order.push_back(k);
          out.push_back(r[0].clone());
        });
    EXPECT_EQ(order, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
    return at::cat(out);
  };
  at::Tensor on_gpu = run(gpu, w_gpu), on_cpu = run(cpu, w);
  EXPECT_FALSE(on_gpu.is_cuda());
  EXPECT_LT((on_gpu - on_cpu).abs().max().item<double>(), 1e-2);  // TF32 matmuls where enabled
}

core::UNet tiny_unet() {
  core::UNetOptions o;
  o.model_channels = 32;
  o.channel_mult = {1, 2};
  o.num_res_blocks = 1;
  o.attention_ds = {2};
  o.head_channels = 16;
  o.norm_groups = 8;
  o.num_classes = 10;
  at::manual_seed(2);
  return core::UNet(o);
}

TEST(StageDeviceGPU, SamplingOnTheGpuMatchesTheCpu) {
  LF_REQUIRE_CUDA();
  core::DiffusionOptions d;
  const LDMObjective objective(d);
  at::Tensor ids = at::arange(100, 116, at::kLong), labels = ids % 10;
  GenerateOptions g;
  g.steps = 5;
  g.guidance = 2.0;
  g.batch_size = 16;
  g.seed = 3;
  core::UNet cpu_model = tiny_unet(), gpu_model = tiny_unet();
  at::Tensor z_cpu = generate_latents(*cpu_model, objective, ids, labels, {4, 8, 8}, g);
  for (const char* precision : {"f32", "bf16"}) {
    StageDevice dev = stage_device(at::Device(at::kCUDA, 0), precision, "sample.precision");
    dev.prepare(*gpu_model);
    GenerateOptions gg = g;
    gg.autocast = dev.autocasts();
    at::Tensor z_gpu = generate_latents(*gpu_model, objective, ids, labels, {4, 8, 8}, gg).cpu();
    // The keyed noise is the same bits on both devices, so only the arithmetic differs (f32 on
    // the GPU includes cuDNN's TF32 convolutions, ~1e-3 relative per layer).
    const double tol = std::string(precision) == "f32" ? 2e-2 : 0.25;
    EXPECT_LT((z_gpu - z_cpu).abs().max().item<double>(), tol) << precision;
  }
}

TEST(StageDeviceGPU, VAEEncodeOnTheGpuMatchesTheCpu) {
  LF_REQUIRE_CUDA();
  core::VAEOptions o;
  o.block_out_channels = {8, 16};
  o.norm_num_groups = 8;
  o.latent_channels = 4;
  o.in_channels = o.out_channels = 1;
  at::manual_seed(4);
  Autoencoder cpu = Autoencoder::from_vae(core::VAE(o), "");
  at::manual_seed(4);
  Autoencoder gpu = Autoencoder::from_vae(core::VAE(o), "");
  StageDevice dev = stage_device(at::Device(at::kCUDA, 0), "f32", "cache.precision");
  gpu.to(dev.device(), dev.dtype());
  at::Tensor images = at::rand({32, 1, 16, 16}) * 2 - 1;
  auto [mean_cpu, logvar_cpu] = cpu.encode_moments(images, 8);
  auto [mean_gpu, logvar_gpu] = gpu.encode_moments(dev.upload(images), 8);
  // TF32 convolutions (cuDNN's default) are within ~1e-3 of float32.
  EXPECT_LT((mean_gpu.cpu() - mean_cpu).abs().max().item<double>(), 1e-2);
  EXPECT_LT((logvar_gpu.cpu() - logvar_cpu).abs().max().item<double>(), 1e-2);
}

}  // namespace
}  // namespace lf::launch
