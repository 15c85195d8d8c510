// Tests of core/diffusion: moments of the forward process, round trips between the
// parameterisations at every t, min-SNR weights against their closed form, the loss, offset
// noise and option validation.
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>

#include "core/diffusion.h"
#include "core/keyed_rng.h"

#include <torch/cuda.h>

namespace lf::core {
namespace {

DiffusionOptions options_for(ScheduleKind schedule, Prediction prediction,
                             LossWeighting weighting = LossWeighting::kUniform) {
  DiffusionOptions o;
  o.schedule = schedule;
  o.prediction = prediction;
  o.weighting = weighting;
  return o;
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

TEST(Diffusion, QSampleHasTheForwardProcessMoments) {
  Diffusion d(options_for(ScheduleKind::kScaledLinear, Prediction::kEps));
  const int64_t n = 200000;
  auto idx = at::arange(n, at::kLong);
  auto noise = keyed_normal(11, stream_id(Stream::kNoise), 0, idx, {2});
  auto x0 = at::tensor(std::vector<double>{1.5, -0.7}, at::kDouble).expand({n, 2});
  for (int64_t step : {0, 250, 999}) {
    SCOPED_TRACE(step);
    auto t = at::full({n}, step, at::kLong);
    auto xt = d.q_sample(x0, t, noise);
    const double ac = d.schedule().alphas_cumprod()[step].item<double>();
    auto mean = xt.mean(0), var = xt.var(0);
    for (int c = 0; c < 2; ++c) {
      double mu = std::sqrt(ac) * (c == 0 ? 1.5 : -0.7), s2 = 1 - ac;
      // 5 standard errors of the mean (sqrt(var/n)) and of the variance (var sqrt(2/n)).
      EXPECT_NEAR(mean[c].item<double>(), mu, 5 * std::sqrt(s2 / n)) << "channel " << c;
      EXPECT_NEAR(var[c].item<double>(), s2, 5 * s2 * std::sqrt(2.0 / n)) << "channel " << c;
    }
  }
}

TEST(Diffusion, ParameterisationsRoundTripAtEveryStep) {
  for (auto schedule : {ScheduleKind::kLinear, ScheduleKind::kScaledLinear, ScheduleKind::kCosine}) {
    for (auto prediction : {Prediction::kEps, Prediction::kV, Prediction::kX0}) {
      SCOPED_TRACE(to_string(schedule) + "/" + to_string(prediction));
      Diffusion d(options_for(schedule, prediction));
      const int64_t T = d.timesteps();
      auto t = at::arange(T, at::kLong);
      auto idx = at::arange(T, at::kLong);
      auto x0 = keyed_normal(1, 3, 0, idx, {3, 2});
      auto eps = keyed_normal(1, 3, 1, idx, {3, 2});
      auto xt = d.q_sample(x0, t, eps);
      auto pred = d.target(x0, eps, t);
      // Recovered eps and x0, judged relative to the scale of the values (~1).
      EXPECT_LT(max_abs_diff(d.eps_from(pred, xt, t), eps), 1e-10);
      EXPECT_LT(max_abs_diff(d.x0_from(pred, xt, t), x0), 1e-10);
      EXPECT_LT(max_abs_diff(d.prediction_from_eps_x0(d.eps_from(pred, xt, t),
                                                      d.x0_from(pred, xt, t), t),
                             pred),
                1e-10);
      // v is the same quantity whichever parameterisation the network uses.
      auto ac = d.schedule().alphas_cumprod().view({T, 1, 1});
      auto v = ac.sqrt() * eps - (1 - ac).sqrt() * x0;
      EXPECT_LT(max_abs_diff(d.v_from_eps_x0(eps, x0, t), v), 1e-14);
      if (prediction == Prediction::kV) {
        EXPECT_LT(max_abs_diff(pred, v), 1e-14);
      }
    }
  }
}

TEST(Diffusion, MinSNRWeightsMatchClosedForm) {
  const double gamma = 5.0;
  for (auto prediction : {Prediction::kEps, Prediction::kV, Prediction::kX0}) {
    SCOPED_TRACE(to_string(prediction));
    auto o = options_for(ScheduleKind::kScaledLinear, prediction, LossWeighting::kMinSNR);
    o.min_snr_gamma = gamma;
    Diffusion d(o);
    auto t = at::arange(0, 1000, 37, at::kLong);
    auto w = d.loss_weight(t);
    ASSERT_EQ(w.sizes(), t.sizes());
    bool saw_clipped = false, saw_unclipped = false;
    for (int64_t i = 0; i < t.size(0); ++i) {
      const double ac = d.schedule().alphas_cumprod()[t[i].item<int64_t>()].item<double>();
      const double snr = ac / (1 - ac), m = std::min(snr, gamma);
      (snr > gamma ? saw_clipped : saw_unclipped) = true;
      const double want = prediction == Prediction::kEps ? m / snr
                          : prediction == Prediction::kV ? m / (snr + 1)
                                                         : m;
      EXPECT_NEAR(w[i].item<double>(), want, 1e-12 * want) << "t=" << t[i].item<int64_t>();
    }
    EXPECT_TRUE(saw_clipped && saw_unclipped);  // both branches of the min are exercised
  }
  Diffusion uniform(options_for(ScheduleKind::kCosine, Prediction::kV));
  EXPECT_TRUE(at::equal(uniform.loss_weight(at::arange(10, at::kLong)),
                        at::ones({10}, at::kDouble)));
}

TEST(Diffusion, LossIsZeroForTheExactTargetAndWeightedMSEOtherwise) {
  for (auto prediction : {Prediction::kEps, Prediction::kV, Prediction::kX0}) {
    SCOPED_TRACE(to_string(prediction));
    Diffusion d(options_for(ScheduleKind::kScaledLinear, prediction, LossWeighting::kMinSNR));
    auto idx = at::arange(8, at::kLong);
    auto x0 = keyed_normal(2, 3, 0, idx, {4, 3, 3}, at::kFloat);
    auto eps = keyed_normal(2, 3, 1, idx, {4, 3, 3}, at::kFloat);
    auto t = keyed_randint(2, 2, 0, idx, 0, 1000);
    auto target = d.target(x0, eps, t);
    auto loss = d.per_sample_loss(target, x0, eps, t);
    ASSERT_EQ(loss.sizes(), (std::vector<int64_t>{8}));
    EXPECT_EQ(loss.scalar_type(), at::kFloat);
    EXPECT_EQ(loss.abs().max().item<float>(), 0.0f);
    // Off by 0.5 everywhere: loss = weight * 0.25.
    auto off = d.per_sample_loss(target + 0.5, x0, eps, t);
    auto want = d.loss_weight(t).to(at::kFloat) * 0.25f;
    EXPECT_LT(max_abs_diff(off, want), 1e-6);
    // bfloat16 inputs are promoted to float32 for the loss.
    EXPECT_EQ(d.per_sample_loss(target.to(at::kBFloat16), x0, eps, t).scalar_type(), at::kFloat);
  }
}

TEST(Diffusion, OffsetNoiseShiftsEachChannel) {
  auto o = options_for(ScheduleKind::kScaledLinear, Prediction::kEps);
  o.offset_noise = 0.1;
  Diffusion d(o);
  auto noise = at::zeros({2, 3, 4, 4}, at::kFloat);
  auto channel = at::tensor(std::vector<float>{1, 2, 3, -1, -2, -3}).view({2, 3});
  auto out = d.offset_noise(noise, channel);
  for (int n = 0; n < 2; ++n) {
    for (int c = 0; c < 3; ++c) {
      auto plane = out[n][c];
      EXPECT_NEAR(plane.min().item<float>(), 0.1f * channel[n][c].item<float>(), 1e-7);
      EXPECT_NEAR(plane.max().item<float>(), 0.1f * channel[n][c].item<float>(), 1e-7);
    }
  }
  Diffusion plain(options_for(ScheduleKind::kScaledLinear, Prediction::kEps));
  EXPECT_TRUE(at::equal(plain.offset_noise(noise, channel), noise));
  EXPECT_THROW(d.offset_noise(noise, channel.view({3, 2})), c10::Error);
}

TEST(Diffusion, WorksInFloat32AndChecksItsInputs) {
  Diffusion d(options_for(ScheduleKind::kCosine, Prediction::kV));
  auto x = at::ones({2, 3}, at::kFloat);
  auto t = at::tensor(std::vector<int64_t>{0, 999}, at::kLong);
  auto xt = d.q_sample(x, t, x);
  EXPECT_EQ(xt.scalar_type(), at::kFloat);
  auto msg_of = [](auto fn) {
    try {
      fn();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("<no exception>");
  };
  EXPECT_NE(msg_of([&] { d.q_sample(x, at::tensor(std::vector<int64_t>{0, 1000}), x); })
                .find("timesteps must lie in [0, 1000), found min 0 max 1000"),
            std::string::npos);
  EXPECT_NE(msg_of([&] { d.q_sample(x, at::zeros({3}, at::kLong), x); }).find("t has 3 entries"),
            std::string::npos);
  EXPECT_NE(msg_of([&] { d.q_sample(x, t.to(at::kInt), x); }).find("t must be int64"),
            std::string::npos);
  EXPECT_NE(msg_of([&] { d.q_sample(x, t, at::ones({2, 4})); }).find("noise has shape"),
            std::string::npos);
}

// Runs where CUDA is available (skipped on CPU-only machines).
TEST(Diffusion, CudaAgreesWithCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const at::Device cuda(at::kCUDA, 0);
  Diffusion d(options_for(ScheduleKind::kCosine, Prediction::kV, LossWeighting::kMinSNR));
  auto idx = at::arange(64, at::kLong);
  auto x0 = keyed_normal(4, 3, 0, idx, {4, 8, 8});
  auto eps = keyed_normal(4, 3, 1, idx, {4, 8, 8});
  auto t = keyed_randint(4, 2, 0, idx, 0, 1000);
  auto xt = d.q_sample(x0, t, eps);
  auto xt_gpu = d.q_sample(x0.to(cuda), t.to(cuda), eps.to(cuda));
  EXPECT_LT((xt_gpu.cpu() - xt).abs().max().item<double>(), 1e-12);
  auto pred = d.target(x0, eps, t);
  auto loss = d.per_sample_loss(pred + 0.1, x0, eps, t);
  auto loss_gpu = d.per_sample_loss((pred + 0.1).to(cuda), x0.to(cuda), eps.to(cuda), t.to(cuda));
  EXPECT_LT((loss_gpu.cpu() - loss).abs().max().item<double>(), 1e-12);
  EXPECT_LT((d.x0_from(pred.to(cuda), xt_gpu, t.to(cuda)).cpu() - x0).abs().max().item<double>(),
            1e-10);
}

TEST(Diffusion, OptionsValidateAndNamesRoundTrip) {
  auto error_of = [](DiffusionOptions o) {
    try {
      o.validate();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("<valid>");
  };
  DiffusionOptions o;
  EXPECT_EQ(error_of(o), "<valid>");
  o.timesteps = 0;
  EXPECT_NE(error_of(o).find("diffusion.timesteps is 0"), std::string::npos);
  o = {};
  o.min_snr_gamma = -1;
  EXPECT_NE(error_of(o).find("diffusion.min_snr_gamma is -1"), std::string::npos);
  o = {};
  o.offset_noise = std::nan("");
  EXPECT_NE(error_of(o).find("diffusion.offset_noise is nan"), std::string::npos);
  o.offset_noise = 0.1;
  EXPECT_THROW(Diffusion{[] { DiffusionOptions x; x.timesteps = -5; return x; }()},
               std::invalid_argument);

  for (auto p : {Prediction::kEps, Prediction::kV, Prediction::kX0}) {
    EXPECT_EQ(predictions().parse(to_string(p), "diffusion.prediction"), p);
  }
  for (auto w : {LossWeighting::kUniform, LossWeighting::kMinSNR}) {
    EXPECT_EQ(loss_weightings().parse(to_string(w), "diffusion.loss_weighting"), w);
  }
  try {
    predictions().parse("epsilon", "diffusion.prediction");
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("diffusion.prediction = 'epsilon': expected one of eps, v, x0"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(loss_weightings().parse("minsnr", "diffusion.loss_weighting"), std::invalid_argument);
}

}  // namespace
}  // namespace lf::core
