// Tests of core/flow: the interpolant, target and loss at known values, the velocity
// conversions, keyed times that do not depend on the batch layout, the uniform and
// logit-normal time distributions, and the options that refuse the other objective's keys.
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>

#include "core/flow.h"
#include "core/keyed_rng.h"
#include "tests/core/models_test_support.h"

namespace lf::core {
namespace {

using test::ExpectThrowContains;

DiffusionOptions flow_options(TimeSampling s = TimeSampling::kUniform, double mean = 0.0, double std = 1.0) {
  DiffusionOptions o;
  o.objective = Objective::kFlow;
  o.t_sampling = s;
  o.t_mean = mean;
  o.t_std = std;
  return o;
}

TEST(Flow, InterpolantTargetAndLossAtKnownValues) {
  FlowMatching f(flow_options());
  at::Tensor x0 = torch::tensor({1.0, -2.0, 0.5, 3.0, 4.0, -1.0}, torch::kDouble).view({3, 2});
  at::Tensor eps = torch::tensor({0.25, 1.0, -1.5, 2.0, 0.0, 8.0}, torch::kDouble).view({3, 2});
  at::Tensor t = torch::tensor({0.0, 1.0, 0.25}, torch::kDouble);
  at::Tensor xt = f.x_t(x0, eps, t);
  EXPECT_TRUE(torch::equal(xt[0], x0[0]));   // t = 0: the data, exactly
  EXPECT_TRUE(torch::equal(xt[1], eps[1]));  // t = 1: the noise, exactly
  EXPECT_DOUBLE_EQ(xt[2][0].item<double>(), 0.75 * 4.0 + 0.25 * 0.0);
  EXPECT_DOUBLE_EQ(xt[2][1].item<double>(), 0.75 * -1.0 + 0.25 * 8.0);
  EXPECT_TRUE(torch::equal(f.target(x0, eps), eps - x0));
  // Output = target + c_i per sample: the loss of sample i is c_i^2.
  at::Tensor c = torch::tensor({0.0, 0.5, -3.0}, torch::kDouble);
  at::Tensor loss = f.per_sample_loss(eps - x0 + c.view({3, 1}), x0, eps);
  EXPECT_EQ(loss.scalar_type(), torch::kDouble);
  LF_EXPECT_CLOSE(loss, c.pow(2), 1e-15);
  // A non-constant error: mean over the non-batch dims.
  at::Tensor out = (eps - x0).clone();
  out[2][0] += 1.0;
  out[2][1] -= 2.0;
  EXPECT_DOUBLE_EQ(f.per_sample_loss(out, x0, eps)[2].item<double>(), (1.0 + 4.0) / 2);
  // Dtypes: float32 stays float32, half is promoted, t is cast to the data's dtype.
  EXPECT_EQ(f.per_sample_loss(out.to(torch::kFloat), x0.to(torch::kFloat), eps.to(torch::kFloat)).scalar_type(),
            torch::kFloat);
  EXPECT_EQ(f.per_sample_loss(out.to(torch::kHalf), x0.to(torch::kHalf), eps.to(torch::kHalf)).scalar_type(),
            torch::kFloat);
  EXPECT_EQ(f.x_t(x0.to(torch::kFloat), eps.to(torch::kFloat), t).scalar_type(), torch::kFloat);
  ExpectThrowContains<c10::Error>([&] { f.x_t(x0, eps, torch::tensor({0.5, 0.5})); },
                                  {"t has shape [2] but the data has shape [3, 2]"});
  ExpectThrowContains<c10::Error>([&] { f.x_t(x0, eps, torch::tensor({0, 1, 0})); }, {"t must be floating point"});
}

TEST(Flow, VelocityConversionsInvertTheInterpolant) {
  FlowMatching f(flow_options());
  at::Tensor idx = at::arange(64, at::kLong);
  at::Tensor x0 = keyed_normal(1, 3, 0, idx, {4, 2, 2}), eps = keyed_normal(1, 3, 1, idx, {4, 2, 2});
  at::Tensor t = f.sample_time(1, 0, idx);
  at::Tensor xt = f.x_t(x0, eps, t), v = f.target(x0, eps);
  LF_EXPECT_CLOSE(f.x0_from(v, xt, t), x0, 1e-12);
  LF_EXPECT_CLOSE(f.eps_from(v, xt, t), eps, 1e-12);
  EXPECT_TRUE(torch::equal(FlowMatching::model_time(torch::tensor({0.0, 0.5, 1.0})),
                           torch::tensor({0.0, 500.0, 1000.0})));
}

TEST(Flow, KeyedTimesDoNotDependOnTheBatchLayout) {
  for (auto sampling : {TimeSampling::kUniform, TimeSampling::kLogitNormal}) {
    SCOPED_TRACE(to_string(sampling));
    FlowMatching f(flow_options(sampling, 0.3, 1.2));
    at::Tensor idx = at::arange(100, at::kLong);
    at::Tensor all = f.sample_time(42, 3, idx, at::TensorOptions().dtype(at::kFloat));
    EXPECT_EQ(all.sizes(), (std::vector<int64_t>{100}));
    EXPECT_EQ(all.scalar_type(), at::kFloat);
    // Two "ranks" taking contiguous halves, and a shuffled batch: the same t per sample index.
    at::Tensor a = f.sample_time(42, 3, idx.slice(0, 0, 37), at::TensorOptions().dtype(at::kFloat));
    at::Tensor b = f.sample_time(42, 3, idx.slice(0, 37), at::TensorOptions().dtype(at::kFloat));
    EXPECT_TRUE(torch::equal(at::cat({a, b}), all));
    at::Tensor perm = torch::randperm(100);
    EXPECT_TRUE(torch::equal(f.sample_time(42, 3, perm, at::TensorOptions().dtype(at::kFloat)), all.index_select(0, perm)));
    // Per-sample epochs (a batch across an epoch boundary) equal the scalar-epoch overload.
    at::Tensor ep = at::full({100}, 3, at::kLong);
    EXPECT_TRUE(torch::equal(f.sample_time(42, ep, idx), f.sample_time(42, 3, idx)));
    // Seed and epoch change the draw; the value is that of the float64 draw, cast.
    EXPECT_FALSE(torch::equal(f.sample_time(43, 3, idx), f.sample_time(42, 3, idx)));
    EXPECT_FALSE(torch::equal(f.sample_time(42, 4, idx), f.sample_time(42, 3, idx)));
    EXPECT_TRUE(torch::equal(f.sample_time(42, 3, idx).to(at::kFloat), all));
  }
  // uniform is the keyed uniform of stream kFlowTime itself (and nothing else).
  FlowMatching u(flow_options());
  at::Tensor idx = at::arange(10, at::kLong);
  EXPECT_TRUE(torch::equal(u.sample_time(5, 2, idx), keyed_uniform(5, stream_id(Stream::kFlowTime), 2, idx, {})));
}

TEST(Flow, UniformAndLogitNormalTimesHaveTheirDistributions) {
  const int64_t n = 200000;
  at::Tensor idx = at::arange(n, at::kLong);
  at::Tensor u = FlowMatching(flow_options()).sample_time(9, 0, idx);
  EXPECT_GT(u.min().item<double>(), 0.0);
  EXPECT_LT(u.max().item<double>(), 1.0);
  EXPECT_NEAR(u.mean().item<double>(), 0.5, 5 * std::sqrt(1.0 / 12 / n));
  EXPECT_NEAR(u.var().item<double>(), 1.0 / 12, 5 * std::sqrt(1.0 / 180 / n));
  const double m = 0.5, s = 0.8;
  at::Tensor t = FlowMatching(flow_options(TimeSampling::kLogitNormal, m, s)).sample_time(9, 0, idx);
  EXPECT_GT(t.min().item<double>(), 0.0);
  EXPECT_LT(t.max().item<double>(), 1.0);
  at::Tensor logit = at::log(t / (1 - t));  // logit(t) ~ N(m, s^2)
  EXPECT_NEAR(logit.mean().item<double>(), m, 5 * s / std::sqrt(n));
  EXPECT_NEAR(logit.std().item<double>(), s, 5 * s / std::sqrt(2.0 * n));
  // SD3's default (0, 1) has median 1/2 and puts more mass in the middle than uniform.
  at::Tensor sd3 = FlowMatching(flow_options(TimeSampling::kLogitNormal)).sample_time(9, 0, idx);
  EXPECT_NEAR(sd3.median().item<double>(), 0.5, 0.01);
  EXPECT_GT(((sd3 > 0.25) & (sd3 < 0.75)).to(at::kDouble).mean().item<double>(), 0.65);
}

std::string error_of(const DiffusionOptions& o) {
  try {
    o.validate();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "<valid>";
}

TEST(Flow, OptionsRefuseTheKeysOfTheOtherObjective) {
  DiffusionOptions o = flow_options(TimeSampling::kLogitNormal, -0.5, 2.0);
  EXPECT_EQ(error_of(o), "<valid>");
  o.schedule = ScheduleKind::kCosine;
  o.timesteps = 500;
  o.prediction = Prediction::kV;
  o.weighting = LossWeighting::kMinSNR;
  o.min_snr_gamma = 3;
  o.offset_noise = 0.1;
  const std::string all = error_of(o);
  for (const char* part :
       {"diffusion.schedule = cosine does not apply to diffusion.objective = flow: the linear interpolant",
        "diffusion.timesteps = 500 does not apply", "flow time is continuous in [0, 1]",
        "diffusion.prediction = v does not apply", "the network predicts the velocity eps - x0",
        "diffusion.loss_weighting = min_snr does not apply", "diffusion.min_snr_gamma = 3 does not apply",
        "diffusion.offset_noise = 0.1 does not apply", "pure noise at t = 1"})
    EXPECT_NE(all.find(part), std::string::npos) << "'" << part << "' not in: " << all;
  // One at a time, and the defaults written out are accepted.
  o = flow_options();
  o.prediction = Prediction::kX0;
  EXPECT_EQ(error_of(o), "diffusion.prediction = x0 does not apply to diffusion.objective = flow: the network "
                         "predicts the velocity eps - x0");
  o.prediction = Prediction::kEps;
  o.schedule = ScheduleKind::kScaledLinear;
  o.timesteps = 1000;
  EXPECT_EQ(error_of(o), "<valid>");
  // The flow keys with ddpm.
  DiffusionOptions d;
  d.t_sampling = TimeSampling::kLogitNormal;
  d.t_std = 0.5;
  const std::string msg = error_of(d);
  EXPECT_NE(msg.find("diffusion.t_sampling = logit_normal does not apply to diffusion.objective = ddpm: DDPM draws "
                     "integer timesteps uniformly"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("diffusion.t_std = 0.5 does not apply"), std::string::npos) << msg;
  d = DiffusionOptions();
  d.t_mean = 1.0;
  EXPECT_NE(error_of(d).find("diffusion.t_mean = 1 does not apply"), std::string::npos);
  // Ranges.
  EXPECT_NE(error_of(flow_options(TimeSampling::kLogitNormal, 0.0, 0.0)).find("diffusion.t_std is 0, expected a finite value > 0"),
            std::string::npos);
  EXPECT_NE(error_of(flow_options(TimeSampling::kLogitNormal, INFINITY)).find("diffusion.t_mean is inf"),
            std::string::npos);
  // Each class takes its own objective only.
  ExpectThrowContains<std::invalid_argument>([] { Diffusion x(flow_options()); },
                                             {"Diffusion implements diffusion.objective = ddpm, not flow"});
  ExpectThrowContains<std::invalid_argument>([] { FlowMatching x(DiffusionOptions{}); },
                                             {"FlowMatching implements diffusion.objective = flow, not ddpm"});
  // Names.
  for (auto x : {Objective::kDDPM, Objective::kFlow}) EXPECT_EQ(objectives().parse(to_string(x), "k"), x);
  for (auto x : {TimeSampling::kUniform, TimeSampling::kLogitNormal})
    EXPECT_EQ(time_samplings().parse(to_string(x), "k"), x);
  ExpectThrowContains<std::invalid_argument>([] { objectives().parse("rf", "diffusion.objective"); },
                                             {"diffusion.objective = 'rf': expected one of ddpm, flow"});
  ExpectThrowContains<std::invalid_argument>([] { time_samplings().parse("lognorm", "diffusion.t_sampling"); },
                                             {"diffusion.t_sampling = 'lognorm': expected one of uniform, logit_normal"});
}

}  // namespace
}  // namespace lf::core
