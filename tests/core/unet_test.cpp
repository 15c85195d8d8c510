// Tests of core/unet: the timestep embedding's closed form, shapes across levels and sizes,
// class conditioning and the null class, zero-initialised output, per-sample independence,
// caller-supplied dropout masks, every validation message, and that training on a fixed set
// of latents drives the diffusion loss well below its start.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <numeric>

#include "core/state_dict.h"
#include "core/unet.h"
#include "tests/core/models_test_support.h"

namespace lf::core {
namespace {

using test::ExpectThrowContains;

UNetOptions small(std::vector<int64_t> mult = {1, 2}, int64_t classes = 0) {
  UNetOptions o;
  o.model_channels = 16;
  o.channel_mult = std::move(mult);
  o.num_res_blocks = 1;
  o.attention_ds = {2};
  o.head_channels = 8;
  o.norm_groups = 8;
  o.num_classes = classes;
  return o;
}

// Moves every parameter away from its (partly zero) initialisation.
void perturb(torch::nn::Module& m, double scale = 0.1) {
  torch::NoGradGuard no_grad;
  for (auto& p : m.parameters()) p.add_(torch::randn_like(p) * scale);
}

TEST(TimestepEmbedding, MatchesGuidedDiffusionClosedForm) {
  const std::vector<double> ts = {0.0, 5.0, 999.5};
  at::Tensor emb = timestep_embedding(torch::tensor(ts, torch::kDouble), 7);  // odd: zero pad
  ASSERT_EQ(emb.sizes(), (std::vector<int64_t>{3, 7}));
  for (size_t n = 0; n < ts.size(); ++n)
    for (int i = 0; i < 3; ++i) {
      const double f = std::exp(-std::log(10000.0) * i / 3.0);
      EXPECT_NEAR(emb[n][i].item<double>(), std::cos(ts[n] * f), 2e-4) << n << "," << i;
      EXPECT_NEAR(emb[n][3 + i].item<double>(), std::sin(ts[n] * f), 2e-4) << n << "," << i;
      EXPECT_EQ(emb[n][6].item<double>(), 0.0);
    }
  EXPECT_TRUE(torch::equal(timestep_embedding(torch::tensor({3, 9}), 8),
                           timestep_embedding(torch::tensor({3.0f, 9.0f}), 8)));
}

TEST(UNet, OutputShapesAcrossLevelsSizesAndConditioning) {
  torch::NoGradGuard no_grad;
  for (std::vector<int64_t> mult : {std::vector<int64_t>{1}, {1, 2}, {1, 2, 2}}) {
    for (int64_t classes : {0, 3}) {
      UNetOptions o = small(mult, classes);
      o.attention_ds = {1, int64_t{1} << (mult.size() - 1)};
      o.in_channels = 3;
      o.out_channels = 5;
      UNet net(o);
      const int64_t m = o.size_multiple();
      for (auto [h, w] : {std::pair<int64_t, int64_t>{2 * m, 2 * m}, {m, 3 * m}, {8, 8}}) {
        at::Tensor y = classes ? torch::tensor({0, 3}) : at::Tensor();
        at::Tensor out = net->forward(torch::randn({2, 3, h, w}), torch::tensor({1, 500}), y);
        EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 5, h, w}))
            << "levels " << mult.size() << " classes " << classes << " size " << h << "x" << w;
      }
    }
  }
}

TEST(UNet, StartsAtZeroOutputAndLearnsFromEveryBlock) {
  UNet net(small({1, 2}, 4));
  at::Tensor x = torch::randn({2, 4, 8, 8});
  at::Tensor out = net->forward(x, torch::tensor({10, 20}), torch::tensor({1, 4}));
  EXPECT_EQ(out.abs().max().item<double>(), 0.0);  // conv_out is zero-initialised (ADM)
  // Gradients still reach the output layer, and after one perturbation every parameter.
  out.pow(2).sum().backward();
  perturb(*net);
  for (auto& p : net->parameters()) p.mutable_grad() = at::Tensor();
  net->forward(x, torch::tensor({10, 20}), torch::tensor({1, 4})).pow(2).sum().backward();
  for (const auto& p : net->named_parameters())
    EXPECT_TRUE(p.value().grad().defined() && p.value().grad().abs().sum().item<double>() > 0)
        << p.key() << " gets no gradient";
}

TEST(UNet, SamplesAreIndependentOfTheirBatch) {
  torch::manual_seed(3);
  UNet net(small({1, 2}, 4));
  perturb(*net);
  torch::NoGradGuard no_grad;
  at::Tensor x = torch::randn({3, 4, 8, 8});
  at::Tensor t = torch::tensor({5, 400, 999});
  at::Tensor y = torch::tensor({0, 4, 2});
  at::Tensor all = net->forward(x, t, y);
  for (int64_t i = 0; i < 3; ++i) {
    at::Tensor one = net->forward(x.slice(0, i, i + 1), t.slice(0, i, i + 1), y.slice(0, i, i + 1));
    LF_EXPECT_CLOSE(one, all.slice(0, i, i + 1), 1e-5);
  }
}

TEST(UNet, ClassLabelsTimestepsAndTheNullClass) {
  torch::manual_seed(4);
  UNet net(small({1, 2}, 3));
  perturb(*net);
  torch::NoGradGuard no_grad;
  at::Tensor x = torch::randn({2, 4, 8, 8});
  at::Tensor t = torch::tensor({7, 7});
  at::Tensor a = net->forward(x, t, torch::tensor({0, 1}));
  at::Tensor b = net->forward(x, t, torch::tensor({2, 1}));
  EXPECT_GT((a[0] - b[0]).abs().max().item<double>(), 1e-4);  // the label matters
  EXPECT_TRUE(torch::equal(a[1], b[1]));                       // and only for its sample
  // Undefined labels mean the null class (index num_classes).
  EXPECT_TRUE(torch::equal(net->forward(x, t), net->forward(x, t, torch::tensor({3, 3}))));
  // Integer and float timesteps, and a scalar for the whole batch, agree.
  EXPECT_TRUE(torch::equal(net->forward(x, torch::tensor({7.0f, 7.0f})), net->forward(x, t)));
  EXPECT_TRUE(torch::equal(net->forward(x, torch::tensor(7)), net->forward(x, t)));
  EXPECT_GT((net->forward(x, torch::tensor({8, 7})) - net->forward(x, t)).abs().max().item<double>(), 1e-5);
}

TEST(UNet, RejectsBadInputsWithClearMessages) {
  UNet net(small({1, 2, 2}, 3));
  at::Tensor t = torch::tensor({1, 2});
  ExpectThrowContains<std::invalid_argument>([&] { net->forward(torch::zeros({2, 4, 6, 8}), t); },
                                             {"UNet: input has shape [2, 4, 6, 8]", "multiples of 4", "3 levels"});
  ExpectThrowContains<std::invalid_argument>([&] { net->forward(torch::zeros({2, 3, 8, 8}), t); },
                                             {"expected [N, 4, H, W]"});
  ExpectThrowContains<std::invalid_argument>([&] { net->forward(torch::zeros({2, 4, 8, 8}), torch::tensor({1, 2, 3})); },
                                             {"timesteps have shape [3], expected [2]"});
  ExpectThrowContains<std::invalid_argument>(
      [&] { net->forward(torch::zeros({2, 4, 8, 8}), t, torch::tensor({0, 4})); },
      {"labels range over [0, 4], expected [0, 3] (3 = the null class)"});
  ExpectThrowContains<std::invalid_argument>(
      [&] { net->forward(torch::zeros({2, 4, 8, 8}), t, torch::tensor({0, 1}, torch::kInt)); },
      {"labels have shape [2] and dtype Int, expected [2] int64"});
  UNet uncond(small({1, 2}, 0));
  ExpectThrowContains<std::invalid_argument>(
      [&] { uncond->forward(torch::zeros({2, 4, 8, 8}), t, torch::tensor({0, 1})); },
      {"labels given to an unconditional model"});
}

TEST(UNet, ValidateNamesEveryBadField) {
  auto expect_error = [](UNetOptions o, std::vector<std::string> parts) {
    ExpectThrowContains<std::invalid_argument>([&] { o.validate(); }, parts);
  };
  UNetOptions o;
  o.in_channels = 0;
  o.out_channels = -2;
  o.model_channels = 0;
  expect_error(o, {"model.in_channels = 0 (must be >= 1)", "model.out_channels = -2", "model.channels = 0"});
  o = UNetOptions();
  o.num_res_blocks = 0;
  o.head_channels = 0;
  o.norm_groups = 0;
  expect_error(o, {"model.num_res_blocks = 0", "model.head_channels = 0", "model.norm_groups = 0"});
  o = UNetOptions();
  o.num_classes = -1;
  o.dropout = 1.0;
  expect_error(o, {"model.num_classes = -1 (must be >= 0; 0 means unconditional)", "model.dropout = 1 (must be in [0, 1))"});
  o = UNetOptions();
  o.channel_mult = {};
  expect_error(o, {"model.channel_mult has 0 entries (must have 1 to 8)"});
  o.channel_mult = {1, 0};
  expect_error(o, {"model.channel_mult[1] = 0 (must be >= 1)"});
  o = UNetOptions();
  o.model_channels = 48;  // 48 and 96 channels: not divisible by 32 groups
  expect_error(o, {"model level 0 has 48 channels (model.channels 48 x channel_mult 1), not divisible by model.norm_groups = 32"});
  o = UNetOptions();
  o.head_channels = 48;  // levels 1, 2 (128 channels) attend
  expect_error(o, {"model level 1 has 128 channels, not divisible by model.head_channels = 48",
                   "model level 2 has 128 channels", "(the middle block always attends)"});
  o = UNetOptions();
  o.attention_ds = {3, 8, 0};
  expect_error(o, {"model.attention_ds contains 3 (allowed: powers of two from 1 to 4 for 3 levels)",
                   "contains 8", "contains 0"});
  ExpectThrowContains<std::invalid_argument>([] { UNetOptions o; o.in_channels = 0; UNet bad(o); }, {"model.in_channels = 0"});
}

TEST(UNet, DropoutTakesMasksFromTheCallerOnly) {
  torch::manual_seed(5);
  UNetOptions o = small({1, 2});
  o.dropout = 0.25;
  UNet net(o);
  perturb(*net);
  at::Tensor x = torch::randn({2, 4, 8, 8});
  at::Tensor t = torch::tensor({3, 30});
  net->train();
  ExpectThrowContains<std::invalid_argument>([&] { net->forward(x, t); },
                                             {"UNet dropout is 0.25 in training but no mask source", "set_dropout_masks"});
  net->eval();
  const at::Tensor reference = net->forward(x, t).detach();  // eval: no masks asked for

  std::vector<int64_t> ids;
  net->set_dropout_masks([&](int64_t id, at::IntArrayRef shape) {
    ids.push_back(id);
    EXPECT_EQ(shape.size(), 4u);
    EXPECT_EQ(shape[0], 2);
    return torch::ones(shape);  // float: used as given
  });
  net->train();
  LF_EXPECT_CLOSE(net->forward(x, t).detach(), reference, 1e-6);
  std::vector<int64_t> expected(net->num_dropout_layers());
  std::iota(expected.begin(), expected.end(), 0);
  EXPECT_EQ(ids, expected);  // each ResBlock once, in construction order

  // A bool keep-mask is scaled by 1 / (1 - p): the same as the float mask m / (1 - p).
  torch::manual_seed(6);
  std::vector<at::Tensor> masks;
  for (int64_t i = 0; i < net->num_dropout_layers(); ++i) masks.push_back(at::Tensor());
  net->set_dropout_masks([&](int64_t id, at::IntArrayRef shape) {
    if (!masks[id].defined()) masks[id] = torch::rand(shape) > 0.25;
    return masks[id];
  });
  const at::Tensor with_bool = net->forward(x, t).detach();
  EXPECT_GT((with_bool - reference).abs().max().item<double>(), 1e-4);
  net->set_dropout_masks([&](int64_t id, at::IntArrayRef) { return masks[id].to(torch::kFloat) / 0.75; });
  LF_EXPECT_CLOSE(net->forward(x, t).detach(), with_bool, 1e-5);

  net->set_dropout_masks([](int64_t, at::IntArrayRef) { return torch::ones({1}); });
  ExpectThrowContains<std::invalid_argument>([&] { net->forward(x, t); },
                                             {"UNet dropout mask for layer 0 has shape [1], expected [2, 16, 8, 8]"});
}

TEST(UNet, DefaultParameterCount) {
  UNet net;
  const int64_t n = count_parameters(*net);
  std::cout << "[ default UNet ] " << n << " parameters\n";
  RecordProperty("default_unet_parameters", std::to_string(n));
  EXPECT_GT(n, 1'000'000);
  EXPECT_LT(n, 10'000'000);
}

// DDPM's simple loss (Ho et al. 2020, eq. 14) with a linear beta schedule (1e-4 .. 0.02 over
// 1000 steps), fresh t and noise each step from torch's RNG: after training, the loss on a
// fixed evaluation set of (t, noise) must be well below its value at initialisation.
TEST(UNet, TrainingLowersTheDiffusionLoss) {
  torch::manual_seed(11);
  UNetOptions o = small({1, 2}, 2);
  UNet net(o);
  const int64_t T = 1000;
  at::Tensor betas = torch::linspace(1e-4, 0.02, T, torch::kDouble);
  at::Tensor alphas_bar = torch::cumprod(1 - betas, 0).to(torch::kFloat);
  // 16 structured latents: two classes of smooth patterns.
  at::Tensor x0 = test::smooth_upsample(torch::randn({16, 4, 2, 2}), 8);
  at::Tensor y = torch::arange(16) % 2;
  auto loss_at = [&](const at::Tensor& t, const at::Tensor& eps) {
    at::Tensor ab = alphas_bar.index_select(0, t).view({-1, 1, 1, 1});
    at::Tensor xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps;
    return (net->forward(xt, t, y) - eps).pow(2).mean();
  };
  at::Tensor eval_t = torch::randint(0, T, {16}, torch::kLong);
  at::Tensor eval_eps = torch::randn_like(x0);
  auto eval_loss = [&] {
    torch::NoGradGuard no_grad;
    return loss_at(eval_t, eval_eps).item<double>();
  };
  const double before = eval_loss();
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(2e-3));
  for (int step = 0; step < 150; ++step) {
    at::Tensor loss = loss_at(torch::randint(0, T, {16}, torch::kLong), torch::randn_like(x0));
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  const double after = eval_loss();
  std::cout << "[ UNet diffusion loss ] " << before << " -> " << after << "\n";
  EXPECT_NEAR(before, eval_eps.pow(2).mean().item<double>(), 1e-6);  // zero output at init
  EXPECT_LT(after, 0.5 * before) << before << " -> " << after;
}

}  // namespace
}  // namespace lf::core
