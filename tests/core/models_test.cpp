// Tests of core/discriminator and core/classifier: PatchGAN shapes and taming's layer layout,
// per-sample independence, hinge losses and the adaptive weight against closed forms, option
// validation messages; the classifier's shapes and that it learns a separable task.
#include <gtest/gtest.h>

#include "core/classifier.h"
#include "core/discriminator.h"
#include "core/state_dict.h"
#include "tests/core/models_test_support.h"

namespace lf::core {
namespace {

using test::ExpectThrowContains;

TEST(PatchDiscriminator, LogitMapShapesFollowTaming) {
  torch::NoGradGuard no_grad;
  struct Case {
    int64_t layers, size, logits;
  };
  // 32 -> 16 -> 8 -> 4 (stride 2) -> 3 -> 2 (stride 1) for 3 layers, as taming's NLayerDiscriminator.
  for (Case c : {Case{3, 32, 2}, Case{3, 64, 6}, Case{2, 32, 6}, Case{1, 16, 6}, Case{3, 24, 1}}) {
    DiscriminatorOptions o;
    o.base_channels = 16;
    o.norm_groups = 8;
    o.n_layers = c.layers;
    PatchDiscriminator d(o);
    EXPECT_EQ(d->forward(torch::randn({2, 1, c.size, c.size})).sizes(),
              (std::vector<int64_t>{2, 1, c.logits, c.logits}))
        << c.layers << " layers, " << c.size << "px";
    EXPECT_EQ(o.output_size(c.size), c.logits);
  }
  DiscriminatorOptions o;
  EXPECT_EQ(o.min_input_size(), 24);
  PatchDiscriminator d(o);  // ndf 64: convs 1->64->128->256->512->1
  const TensorMap sd = state_dict(*d);
  EXPECT_EQ(sd.at("main.0.weight").sizes(), (std::vector<int64_t>{64, 1, 4, 4}));
  EXPECT_EQ(sd.at("main.8.weight").sizes(), (std::vector<int64_t>{512, 256, 4, 4}));
  EXPECT_EQ(sd.at("main.11.weight").sizes(), (std::vector<int64_t>{1, 512, 4, 4}));
  EXPECT_FALSE(sd.count("main.2.bias"));  // GroupNorm's shift replaces the conv bias
  EXPECT_NEAR(sd.at("main.8.weight").std().item<double>(), 0.02, 0.002);  // weights_init
  EXPECT_NEAR(sd.at("main.9.weight").mean().item<double>(), 1.0, 0.01);
  ExpectThrowContains<std::invalid_argument>([&] { d->forward(torch::zeros({1, 1, 20, 32})); },
                                             {"PatchDiscriminator: input has shape [1, 1, 20, 32]", ">= 24 for 3 layers"});
}

TEST(PatchDiscriminator, LogitsDependOnTheirSampleAlone) {
  DiscriminatorOptions o;
  o.base_channels = 16;
  o.norm_groups = 8;
  PatchDiscriminator d(o);
  torch::NoGradGuard no_grad;
  at::Tensor x = torch::randn({3, 1, 32, 32});
  at::Tensor all = d->forward(x);
  for (int64_t i = 0; i < 3; ++i) LF_EXPECT_CLOSE(d->forward(x.slice(0, i, i + 1)), all.slice(0, i, i + 1), 1e-5);
}

TEST(PatchDiscriminator, ValidateNamesEveryBadField) {
  auto expect_error = [](DiscriminatorOptions o, std::vector<std::string> parts) {
    ExpectThrowContains<std::invalid_argument>([&] { o.validate(); }, parts);
  };
  DiscriminatorOptions o;
  o.in_channels = 0;
  o.base_channels = 0;
  o.n_layers = 9;
  expect_error(o, {"discriminator.in_channels = 0", "discriminator.base_channels = 0", "discriminator.n_layers = 9 (must be in [1, 8])"});
  o = DiscriminatorOptions();
  o.base_channels = 24;
  expect_error(o, {"discriminator layer 1 has 48 channels (base_channels 24 x 2), not divisible by discriminator.norm_groups = 32"});
  o.norm = DiscriminatorNorm::kNone;
  EXPECT_NO_THROW(o.validate());
  o = DiscriminatorOptions();
  o.norm_groups = 0;
  expect_error(o, {"discriminator.norm_groups = 0"});
  EXPECT_EQ(discriminator_norms().parse("none", "norm"), DiscriminatorNorm::kNone);
  EXPECT_EQ(to_string(discriminator_norms().parse("group", "norm")), "group");
  ExpectThrowContains<std::invalid_argument>([] { discriminator_norms().parse("batch", "discriminator.norm"); },
                                             {"discriminator.norm = 'batch'", "expected one of group, none"});
}

TEST(GANLosses, HingeAndAdaptiveWeightMatchClosedForms) {
  at::Tensor real = torch::tensor({2.0, 0.5, -1.0, 0.0}, torch::kDouble);
  at::Tensor fake = torch::tensor({-2.0, 0.5, 1.0, -0.25}, torch::kDouble);
  // relu(1 - real) = 0, 0.5, 2, 1 -> 0.875; relu(1 + fake) = 0, 1.5, 2, 0.75 -> 1.0625
  EXPECT_NEAR(hinge_d_loss(real, fake).item<double>(), 0.875 + 1.0625, 1e-12);
  EXPECT_NEAR(hinge_g_loss(fake).item<double>(), -(-2.0 + 0.5 + 1.0 - 0.25) / 4, 1e-12);
  EXPECT_NEAR(adaptive_disc_weight(3.0, 1.0, 0.5), 0.5 * 3.0 / 1.0001, 1e-12);
  EXPECT_DOUBLE_EQ(adaptive_disc_weight(3.0, 0.0, 1.0), 1e4);  // clamped: 3 / 1e-4 = 3e4
  EXPECT_DOUBLE_EQ(adaptive_disc_weight(0.0, 2.0, 1.0), 0.0);
  EXPECT_DOUBLE_EQ(disc_factor_at(49'999, 50'000, 1.0), 0.0);
  EXPECT_DOUBLE_EQ(disc_factor_at(50'000, 50'000, 0.7), 0.7);
}

TEST(Classifier, ShapesAndFeatures) {
  Classifier c;
  torch::NoGradGuard no_grad;
  at::Tensor x = torch::randn({5, 1, 32, 32});
  at::Tensor f = c->features(x);
  EXPECT_EQ(f.sizes(), (std::vector<int64_t>{5, 128}));
  EXPECT_GE(f.min().item<double>(), 0.0);  // post-ReLU
  EXPECT_EQ(c->forward(x).sizes(), (std::vector<int64_t>{5, 10}));
  LF_EXPECT_CLOSE(c->forward(x), c->head(f), 1e-6);
  LF_EXPECT_CLOSE(c->forward(x.slice(0, 1, 2)), c->forward(x).slice(0, 1, 2), 1e-5);
  ClassifierOptions o;
  o.in_channels = 3;
  o.num_classes = 4;
  EXPECT_EQ(Classifier(o)->forward(torch::randn({2, 3, 28, 20})).sizes(), (std::vector<int64_t>{2, 4}));
  ExpectThrowContains<std::invalid_argument>([&] { c->forward(torch::zeros({2, 3, 32, 32})); },
                                             {"Classifier: input has shape [2, 3, 32, 32], expected [N, 1, H, W]"});
  o = ClassifierOptions();
  o.num_classes = 1;
  o.width = 12;
  o.feature_dim = 0;
  ExpectThrowContains<std::invalid_argument>([&] { o.validate(); },
                                             {"classifier.num_classes = 1 (must be >= 2)",
                                              "classifier.width = 12 is not a multiple of 8",
                                              "classifier.feature_dim = 0 (must be >= 1)"});
}

// Two classes: a bright blob in the left or the right half of a noisy image.
TEST(Classifier, LearnsASeparableTask) {
  torch::manual_seed(21);
  ClassifierOptions o;
  o.num_classes = 2;
  o.width = 8;
  Classifier c(o);
  auto batch = [](int64_t n) {
    at::Tensor y = torch::randint(0, 2, {n}, torch::kLong);
    at::Tensor x = torch::randn({n, 1, 16, 16}) * 0.3;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t col = y[i].item<int64_t>() ? 10 : 2;
      x[i].slice(1, 6, 10).slice(2, col, col + 4) += 1.5;
    }
    return std::make_pair(x, y);
  };
  torch::optim::Adam opt(c->parameters(), torch::optim::AdamOptions(3e-3));
  for (int step = 0; step < 40; ++step) {
    auto [x, y] = batch(32);
    at::Tensor loss = at::cross_entropy_loss(c->forward(x), y);
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  torch::NoGradGuard no_grad;
  auto [x, y] = batch(200);
  const double acc = (c->forward(x).argmax(1) == y).to(torch::kDouble).mean().item<double>();
  EXPECT_GT(acc, 0.9) << "accuracy " << acc;
}

}  // namespace
}  // namespace lf::core
