// Tests of core/vae: outputs against a transcription of diffusers' AutoencoderKL
// (tools/vae_golden.py), diffusers key names, shapes for f = 1..8, the posterior and loss
// closed forms, option validation messages, and overfitting a small batch.
#include <gtest/gtest.h>

#include <iostream>

#include "core/state_dict.h"
#include "core/vae.h"
#include "tests/core/models_test_support.h"
#include "tests/core/vae_golden_support.h"

namespace lf::core {
namespace {

using test::ExpectThrowContains;

VAEOptions small_options(std::vector<int64_t> channels, int64_t in = 1) {
  VAEOptions o;
  o.in_channels = o.out_channels = in;
  o.block_out_channels = std::move(channels);
  o.norm_num_groups = 4;
  o.sample_size = 8 << o.block_out_channels.size();
  return o;
}

TEST(VAEGolden, MatchesDiffusersAutoencoderKLTranscription) {
  VAE vae(test::golden_vae_options());
  vae->to(torch::kDouble);
  TensorMap sd = state_dict(*vae);
  EXPECT_EQ(static_cast<int64_t>(sd.size()), test::kGoldenKeys);
  EXPECT_EQ(count_parameters(*vae), test::kGoldenParams);
  test::golden_fill(sd);
  load_state_dict(*vae, sd);
  torch::NoGradGuard no_grad;
  DiagonalGaussian post = vae->encode(test::golden_input());
  test::expect_golden(post.mean(), test::kGoldenMean, "mean");
  test::expect_golden(post.logvar(), test::kGoldenLogvar, "logvar");
  test::expect_golden(vae->decode(post.mode()), test::kGoldenRec, "reconstruction");
}

TEST(VAE, ParameterNamesFollowDiffusersAutoencoderKL) {
  VAEOptions o;  // 3 levels, layers_per_block 1; channels change so conv_shortcuts exist
  o.block_out_channels = {32, 64, 64};
  VAE vae(o);
  const TensorMap sd = state_dict(*vae);
  for (const char* key :
       {"encoder.conv_in.weight", "encoder.down_blocks.0.resnets.0.norm1.weight",
        "encoder.down_blocks.0.resnets.0.conv1.bias", "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
        "encoder.down_blocks.0.downsamplers.0.conv.weight", "encoder.down_blocks.1.downsamplers.0.conv.bias",
        "encoder.mid_block.resnets.1.norm2.bias", "encoder.mid_block.attentions.0.group_norm.weight",
        "encoder.mid_block.attentions.0.to_q.weight", "encoder.mid_block.attentions.0.to_k.bias",
        "encoder.mid_block.attentions.0.to_v.weight", "encoder.mid_block.attentions.0.to_out.0.weight",
        "encoder.conv_norm_out.weight", "encoder.conv_out.weight", "quant_conv.weight",
        "post_quant_conv.bias", "decoder.conv_in.weight", "decoder.mid_block.attentions.0.to_out.0.bias",
        "decoder.up_blocks.0.resnets.1.conv2.weight", "decoder.up_blocks.0.upsamplers.0.conv.weight",
        "decoder.up_blocks.2.resnets.0.conv_shortcut.weight", "decoder.conv_norm_out.bias",
        "decoder.conv_out.weight"})
    EXPECT_TRUE(sd.count(key)) << key;
  // No resampler after the last level; layers_per_block + 1 resnets per decoder block.
  EXPECT_FALSE(sd.count("encoder.down_blocks.2.downsamplers.0.conv.weight"));
  EXPECT_FALSE(sd.count("decoder.up_blocks.2.upsamplers.0.conv.weight"));
  EXPECT_FALSE(sd.count("decoder.up_blocks.0.resnets.2.conv1.weight"));
  EXPECT_FALSE(sd.count("encoder.down_blocks.0.resnets.1.conv1.weight"));
  EXPECT_EQ(sd.at("encoder.mid_block.attentions.0.to_q.weight").sizes(), (std::vector<int64_t>{64, 64}));
  EXPECT_EQ(sd.at("encoder.conv_out.weight").size(0), 8);  // mean and logvar
}

TEST(VAE, DefaultIsSmallEnoughForCPU) {
  VAE vae;
  const int64_t n = count_parameters(*vae);
  std::cout << "[ default VAE ] " << n << " parameters, f = " << vae->options().downsample_factor()
            << ", latent " << vae->options().latent_channels << "x8x8 for 32x32 inputs\n";
  RecordProperty("default_vae_parameters", std::to_string(n));
  EXPECT_EQ(vae->options().downsample_factor(), 4);
  EXPECT_GT(n, 250'000);
  EXPECT_LT(n, 550'000);
}

TEST(VAE, ShapesForEveryDownsamplingFactor) {
  torch::NoGradGuard no_grad;
  const std::vector<std::vector<int64_t>> configs = {{8}, {8, 8}, {8, 16, 16}, {8, 8, 16, 16}};
  for (const auto& ch : configs) {
    VAEOptions o = small_options(ch, 3);
    o.mid_block_add_attention = ch.size() % 2 == 0;  // both settings covered
    VAE vae(o);
    const int64_t f = o.downsample_factor();
    EXPECT_EQ(f, int64_t{1} << (ch.size() - 1));
    for (auto [h, w] : {std::pair<int64_t, int64_t>{8, 8}, {16, 24}}) {
      at::Tensor x = torch::randn({2, 3, h, w});
      DiagonalGaussian post = vae->encode(x);
      EXPECT_EQ(post.mean().sizes(), (std::vector<int64_t>{2, 4, h / f, w / f})) << "f=" << f;
      EXPECT_EQ(post.logvar().sizes(), post.mean().sizes());
      EXPECT_EQ(vae->decode(post.mode()).sizes(), x.sizes()) << "f=" << f;
      EXPECT_EQ(vae->forward(x, torch::randn_like(post.mean())).sizes(), x.sizes());
    }
  }
}

TEST(VAE, RejectsInputsOfTheWrongShapeNamingTheFactor) {
  VAE vae(small_options({8, 8, 8}));
  ExpectThrowContains<std::invalid_argument>([&] { vae->encode(torch::zeros({1, 1, 10, 8})); },
                                             {"VAE::encode", "[1, 1, 10, 8]", "multiples of the downsampling factor 4"});
  ExpectThrowContains<std::invalid_argument>([&] { vae->encode(torch::zeros({1, 3, 8, 8})); },
                                             {"expected [N, 1, H, W]"});
  ExpectThrowContains<std::invalid_argument>([&] { vae->decode(torch::zeros({1, 3, 2, 2})); },
                                             {"VAE::decode", "expected [N, 4, H, W]"});
}

TEST(VAE, ValidateNamesEveryBadField) {
  auto expect_error = [](VAEOptions o, std::vector<std::string> parts) {
    ExpectThrowContains<std::invalid_argument>([&] { o.validate(); }, parts);
  };
  VAEOptions o;
  o.in_channels = 0;
  o.latent_channels = -1;
  expect_error(o, {"vae.in_channels = 0 (must be >= 1)", "vae.latent_channels = -1"});
  o = VAEOptions();
  o.out_channels = 0;
  o.layers_per_block = 0;
  expect_error(o, {"vae.out_channels = 0", "vae.layers_per_block = 0 (must be >= 1)"});
  o = VAEOptions();
  o.block_out_channels = {};
  expect_error(o, {"vae.channels has 0 entries (must have 1 to 6"});
  o.block_out_channels = std::vector<int64_t>(7, 32);
  expect_error(o, {"has 7 entries"});
  o = VAEOptions();
  o.block_out_channels = {32, 48, 0};
  expect_error(o, {"vae.channels[1] = 48 is not divisible by vae.norm_groups = 32",
                   "vae.channels[2] = 0 (must be >= 1)"});
  o = VAEOptions();
  o.norm_num_groups = 0;
  expect_error(o, {"vae.norm_groups = 0 (must be >= 1)"});
  o = VAEOptions();
  o.scaling_factor = 0.0;
  expect_error(o, {"scaling_factor = 0 (must be finite and > 0)"});
  o.scaling_factor = std::nan("");
  expect_error(o, {"scaling_factor = nan"});
  o = VAEOptions();
  o.sample_size = 30;
  expect_error(o, {"sample_size = 30 is not a multiple of the downsampling factor 4"});
  o.sample_size = 0;
  expect_error(o, {"sample_size = 0 (must be >= 1)"});
  ExpectThrowContains<std::invalid_argument>([] { VAE bad(VAEOptions{0}); }, {"vae.in_channels = 0"});
}

TEST(DiagonalGaussian, MatchesClosedForms) {
  at::Tensor mean = torch::tensor({0.5, -1.0, 2.0, 0.0}, torch::kDouble).view({2, 2, 1, 1});
  at::Tensor logvar = torch::tensor({0.0, std::log(4.0), 100.0, -100.0}, torch::kDouble).view({2, 2, 1, 1});
  DiagonalGaussian g(at::cat({mean, logvar}, 1));  // moments: mean channels first
  EXPECT_TRUE(torch::equal(g.mean(), mean));
  EXPECT_TRUE(torch::equal(g.mode(), mean));
  // logvar clamped to [-30, 20] as LDM's DiagonalGaussianDistribution.
  EXPECT_DOUBLE_EQ(g.logvar().flatten()[2].item<double>(), 20.0);
  EXPECT_DOUBLE_EQ(g.logvar().flatten()[3].item<double>(), -30.0);
  EXPECT_NEAR(g.std().flatten()[1].item<double>(), 2.0, 1e-12);
  EXPECT_NEAR(g.var().flatten()[1].item<double>(), 4.0, 1e-12);
  at::Tensor eps = torch::tensor({1.0, -0.5, 0.0, 2.0}, torch::kDouble).view({2, 2, 1, 1});
  LF_EXPECT_CLOSE(g.sample(eps), mean + at::exp(0.5 * g.logvar()) * eps, 1e-12);
  // KL per sample: 0.5 * sum(mu^2 + var - 1 - logvar).
  const double kl0 = 0.5 * (0.25 + 1 - 1 - 0) + 0.5 * (1 + 4 - 1 - std::log(4.0));
  const double kl1 = 0.5 * (4 + std::exp(20.0) - 1 - 20) + 0.5 * (0 + std::exp(-30.0) - 1 + 30);
  at::Tensor kl = g.kl();
  ASSERT_EQ(kl.sizes(), (std::vector<int64_t>{2}));
  EXPECT_NEAR(kl[0].item<double>(), kl0, 1e-12);
  EXPECT_NEAR(kl[1].item<double>() / kl1, 1.0, 1e-12);
  EXPECT_DOUBLE_EQ(DiagonalGaussian(torch::zeros({3, 8, 2, 2})).kl().abs().max().item<double>(), 0.0);
}

TEST(VAELoss, CombinesReconstructionAndWeightedKL) {
  at::Tensor x = torch::tensor({0.0, 1.0, -1.0, 2.0}, torch::kDouble).view({2, 1, 1, 2});
  at::Tensor r = torch::tensor({0.5, 1.0, 0.0, 0.0}, torch::kDouble).view({2, 1, 1, 2});
  DiagonalGaussian post(torch::tensor({1.0, 0.0, 0.0, 0.0}, torch::kDouble).view({2, 2, 1, 1}));
  const double kl_mean = (0.5 * 1.0 + 0.0) / 2;  // sample 0: mu=1, logvar=0 -> 0.5
  VAELoss l1 = vae_loss(x, r, post, ReconLoss::kL1, 0.1);
  EXPECT_NEAR(l1.recon.item<double>(), (0.5 + 0 + 1 + 2) / 4.0, 1e-12);
  EXPECT_NEAR(l1.kl.item<double>(), kl_mean, 1e-12);
  EXPECT_NEAR(l1.total.item<double>(), 3.5 / 4 + 0.1 * kl_mean, 1e-12);
  VAELoss l2 = vae_loss(x, r, post, ReconLoss::kL2, 2.0);
  EXPECT_NEAR(l2.recon.item<double>(), (0.25 + 0 + 1 + 4) / 4.0, 1e-12);
  EXPECT_NEAR(l2.total.item<double>(), 5.25 / 4 + 2.0 * kl_mean, 1e-12);
  EXPECT_EQ(recon_losses().parse("l1", "vae_train.recon_loss"), ReconLoss::kL1);
  EXPECT_EQ(to_string(recon_losses().parse("l2", "vae_train.recon_loss")), "l2");
  ExpectThrowContains<std::invalid_argument>([] { recon_losses().parse("lpips", "vae_train.recon_loss"); },
                                             {"vae_train.recon_loss = 'lpips'", "expected one of l1, l2"});
}

// 8 smooth images (4x4 random fields upsampled), 150 Adam steps: the reconstruction MSE of
// the posterior mode must fall more than tenfold.
TEST(VAE, OverfitsASmallBatch) {
  torch::manual_seed(1234);
  VAEOptions o = small_options({16, 32});
  o.norm_num_groups = 8;
  VAE vae(o);
  at::Tensor x = test::smooth_upsample(torch::rand({8, 1, 4, 4}) * 2 - 1, 16);
  auto mse = [&] {
    torch::NoGradGuard no_grad;
    return (vae->decode(vae->encode(x).mode()) - x).pow(2).mean().item<double>();
  };
  const double before = mse();
  torch::optim::Adam opt(vae->parameters(), torch::optim::AdamOptions(2e-3));
  for (int step = 0; step < 150; ++step) {
    DiagonalGaussian post = vae->encode(x);
    VAELoss loss = vae_loss(x, vae->decode(post.sample(torch::randn_like(post.mean()))), post,
                            ReconLoss::kL2, 1e-6);
    opt.zero_grad();
    loss.total.backward();
    opt.step();
  }
  const double after = mse();
  std::cout << "[ VAE overfit ] MSE " << before << " -> " << after << "\n";
  EXPECT_LT(after, before / 10) << "MSE " << before << " -> " << after;
}

TEST(VAE, LegacyAttentionKeysAreRenamedAndSqueezed) {
  TensorMap old = {{"encoder.mid_block.attentions.0.query.weight", torch::ones({4, 4, 1, 1})},
                   {"encoder.mid_block.attentions.0.key.bias", torch::ones({4})},
                   {"decoder.mid_block.attentions.0.value.weight", torch::ones({4, 4})},
                   {"decoder.mid_block.attentions.0.proj_attn.weight", torch::ones({4, 4, 1})},
                   {"decoder.mid_block.attentions.0.group_norm.weight", torch::ones({4})},
                   {"encoder.conv_in.weight", torch::ones({4, 1, 3, 3})}};
  TensorMap mapped = map_legacy_vae_keys(old);
  EXPECT_EQ(mapped.at("encoder.mid_block.attentions.0.to_q.weight").sizes(), (std::vector<int64_t>{4, 4}));
  EXPECT_TRUE(mapped.count("encoder.mid_block.attentions.0.to_k.bias"));
  EXPECT_TRUE(mapped.count("decoder.mid_block.attentions.0.to_v.weight"));
  EXPECT_EQ(mapped.at("decoder.mid_block.attentions.0.to_out.0.weight").sizes(), (std::vector<int64_t>{4, 4}));
  EXPECT_TRUE(mapped.count("decoder.mid_block.attentions.0.group_norm.weight"));
  EXPECT_EQ(mapped.at("encoder.conv_in.weight").dim(), 4);  // non-attention weights untouched
  EXPECT_EQ(mapped.size(), old.size());
  old["encoder.mid_block.attentions.0.to_q.weight"] = torch::ones({4, 4});
  ExpectThrowContains<std::invalid_argument>([&] { map_legacy_vae_keys(old); },
                                             {"'encoder.mid_block.attentions.0.query.weight'", "'encoder.mid_block.attentions.0.to_q.weight'", "both mean"});
}

}  // namespace
}  // namespace lf::core
