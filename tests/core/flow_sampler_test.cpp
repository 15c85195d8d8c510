// Tests of the flow samplers in core/sampler: the time grid (uniform and SD3's shift), Euler and
// Heun on Gaussian data whose exact velocity field and flow map are known in closed form (error
// and order of convergence, and the pushed-forward distribution), classifier-free guidance on
// velocities, and the refusal of samplers that do not fit the objective.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <stdexcept>

#include "core/keyed_rng.h"
#include "core/sampler.h"
#include "tests/core/models_test_support.h"

namespace lf::core {
namespace {

using test::ExpectThrowContains;

// Data x0 ~ N(mu, s^2) per coordinate, eps ~ N(0, 1), x_t = (1 - t) x0 + t eps. Then x_t is
// Gaussian with mean m_t = (1 - t) mu and variance V_t = (1 - t)^2 s^2 + t^2, and
// Cov(x_t, eps - x0) = t - (1 - t) s^2, so the marginal velocity E[eps - x0 | x_t = x] is affine:
//   v(x, t) = -mu + (t - (1 - t) s^2) / V_t (x - m_t).
// Its flow keeps (x - m_t) / sqrt(V_t) constant (d/dt sqrt(V_t) = (t - (1 - t) s^2) / sqrt(V_t)),
// so the exact ODE solution from t = 1 (m = 0, V = 1) to t = 0 is x_0 = mu + s x_1.
struct Gaussian {
  at::Tensor mu, s;  // [D] per coordinate, float64
  at::Tensor velocity(const at::Tensor& x, const at::Tensor& t) const {
    at::Tensor tt = t.view({-1, 1});
    at::Tensor var = (1 - tt).pow(2) * s.pow(2) + tt.pow(2);
    return -mu + (tt - (1 - tt) * s.pow(2)) / var * (x - (1 - tt) * mu);
  }
  at::Tensor exact(const at::Tensor& x1) const { return mu + s * x1; }
};

Gaussian data() {
  return {torch::tensor({1.5, -0.5, 0.0, 2.0}, torch::kDouble), torch::tensor({0.5, 0.3, 2.0, 1.0}, torch::kDouble)};
}

TEST(FlowSampler, TimeGridIsUniformOrShifted) {
  EXPECT_EQ(flow_time_grid(4), (std::vector<double>{1.0, 0.75, 0.5, 0.25, 0.0}));
  EXPECT_EQ(flow_time_grid(1), (std::vector<double>{1.0, 0.0}));
  const std::vector<double> g = flow_time_grid(4, 3.0);
  ASSERT_EQ(g.size(), 5u);
  EXPECT_EQ(g.front(), 1.0);
  EXPECT_EQ(g.back(), 0.0);
  for (int k = 1; k < 4; ++k) {
    const double u = 1.0 - k / 4.0;
    EXPECT_DOUBLE_EQ(g[k], 3.0 * u / (1.0 + 2.0 * u));  // SD3's shift: more steps near t = 1
    EXPECT_GT(g[k], u);
  }
  ExpectThrowContains<std::invalid_argument>([] { flow_time_grid(0); }, {"sample.steps is 0, expected >= 1"});
  ExpectThrowContains<std::invalid_argument>([] { flow_time_grid(4, 0.0); },
                                             {"flow timestep shift is 0, expected a finite value > 0"});
}

TEST(FlowSampler, EulerAndHeunConvergeAtTheirOrders) {
  const Gaussian g = data();
  const at::Tensor x1 = keyed_normal(3, stream_id(Stream::kSampleInit), 0, at::arange(64, at::kLong), {4});
  const at::Tensor want = g.exact(x1);
  Denoiser v = [&](const at::Tensor& x, const at::Tensor& t) {
    EXPECT_EQ(t.scalar_type(), at::kDouble);
    return g.velocity(x, t);
  };
  for (auto sampler : {FlowSolver::kEuler, FlowSolver::kHeun}) {
    std::vector<double> errors;
    int64_t calls = 0;
    Denoiser counted = [&](const at::Tensor& x, const at::Tensor& t) {
      ++calls;
      return v(x, t);
    };
    for (int64_t steps : {8, 16, 32, 64, 128}) {
      calls = 0;
      at::Tensor x0 = flow_sample(counted, x1, flow_time_grid(steps), sampler);
      EXPECT_EQ(calls, sampler == FlowSolver::kEuler ? steps : 2 * steps);
      errors.push_back((x0 - want).abs().max().item<double>());
    }
    std::cout << "[ " << to_string(sampler) << " ] max error at 8..128 steps:";
    for (double e : errors) std::cout << " " << e;
    std::cout << "; orders:";
    const double expected = sampler == FlowSolver::kEuler ? 1.0 : 2.0;
    for (size_t i = 0; i + 1 < errors.size(); ++i) {
      const double order = std::log2(errors[i] / errors[i + 1]);
      std::cout << " " << order;
      if (i >= 2) {  // the asymptotic regime: 32 -> 64 -> 128 steps
        EXPECT_NEAR(order, expected, 0.06) << to_string(sampler) << " at " << (8 << i) << " steps";
      }
    }
    std::cout << "\n";
    EXPECT_LT(errors.back(), sampler == FlowSolver::kEuler ? 0.1 : 3e-4);
  }
}

TEST(FlowSampler, PushesNoiseToTheDataDistribution) {
  const Gaussian g = data();
  const int64_t n = 20000;
  const at::Tensor x1 = keyed_normal(4, stream_id(Stream::kSampleInit), 0, at::arange(n, at::kLong), {4});
  Denoiser v = [&](const at::Tensor& x, const at::Tensor& t) { return g.velocity(x, t); };
  at::Tensor x0 = flow_sample(v, x1, flow_time_grid(32, 2.0), FlowSolver::kHeun);
  at::Tensor mean = x0.mean(0), var = x0.var(0);
  for (int64_t c = 0; c < 4; ++c) {
    const double mu = g.mu[c].item<double>(), s2 = std::pow(g.s[c].item<double>(), 2);
    EXPECT_NEAR(mean[c].item<double>(), mu, 5 * std::sqrt(s2 / n)) << c;
    EXPECT_NEAR(var[c].item<double>(), s2, 5 * s2 * std::sqrt(2.0 / n)) << c;
  }
  // float32 in, float32 out, with float32 times; the caller's x_T is left as it was.
  const at::Tensor x1f = x1.slice(0, 0, 8).to(at::kFloat), copy = x1f.clone();
  Denoiser vf = [&](const at::Tensor& x, const at::Tensor& t) {
    EXPECT_EQ(t.scalar_type(), at::kFloat);
    return g.velocity(x.to(at::kDouble), t.to(at::kDouble)).to(at::kFloat);
  };
  at::Tensor outf = flow_sample(vf, x1f, flow_time_grid(64), FlowSolver::kHeun);
  EXPECT_EQ(outf.scalar_type(), at::kFloat);
  EXPECT_TRUE(torch::equal(x1f, copy));
  LF_EXPECT_CLOSE(outf, g.exact(x1.slice(0, 0, 8)), 2e-3);
}

TEST(FlowSampler, ClassifierFreeGuidanceMixesVelocities) {
  // Class y in {0, 1} has data mean mu_y; the null class 2 the mean of the mixture's centre.
  const Gaussian c0{torch::tensor({2.0}, torch::kDouble), torch::tensor({0.5}, torch::kDouble)};
  const Gaussian c1{torch::tensor({-1.0}, torch::kDouble), torch::tensor({0.5}, torch::kDouble)};
  const Gaussian null{torch::tensor({0.5}, torch::kDouble), torch::tensor({1.5}, torch::kDouble)};
  int64_t calls = 0;
  ConditionalModel model = [&](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
    ++calls;
    EXPECT_TRUE(at::isFloatingType(t.scalar_type()));
    EXPECT_GE(t.min().item<double>(), 0.0);
    EXPECT_LE(t.max().item<double>(), 1.0);
    at::Tensor out = at::empty_like(x);
    for (int64_t i = 0; i < x.size(0); ++i) {
      const int64_t label = y[i].item<int64_t>();
      const Gaussian& g = label == 0 ? c0 : label == 1 ? c1 : null;
      out[i] = g.velocity(x[i].unsqueeze(0), t[i].unsqueeze(0))[0];
    }
    return out;
  };
  const at::Tensor labels = torch::tensor({0, 1, 0});
  const at::Tensor x1 = keyed_normal(5, stream_id(Stream::kSampleInit), 0, at::arange(3, at::kLong), {1});
  const std::vector<double> grid = flow_time_grid(64);
  // scale 1: the conditional model alone, one call per step on the plain batch.
  at::Tensor cond = flow_sample(classifier_free_guidance(model, labels, 2, 1.0), x1, grid, FlowSolver::kHeun);
  EXPECT_EQ(calls, 2 * 64);
  at::Tensor want = at::cat({c0.exact(x1[0]), c1.exact(x1[1]), c0.exact(x1[2])}).view({3, 1});
  LF_EXPECT_CLOSE(cond, want, 1e-4);
  // scale 0: the unconditional model; scale 3: the guided field v_u + 3 (v_c - v_u).
  at::Tensor uncond = flow_sample(classifier_free_guidance(model, labels, 2, 0.0), x1, grid, FlowSolver::kHeun);
  LF_EXPECT_CLOSE(uncond, null.exact(x1), 1e-4);
  Denoiser guided = [&](const at::Tensor& x, const at::Tensor& t) {
    at::Tensor vu = null.velocity(x, t);
    at::Tensor vc = at::cat({c0.velocity(x.slice(0, 0, 1), t.slice(0, 0, 1)), c1.velocity(x.slice(0, 1, 2), t.slice(0, 1, 2)),
                             c0.velocity(x.slice(0, 2, 3), t.slice(0, 2, 3))});
    return vu + 3.0 * (vc - vu);
  };
  LF_EXPECT_CLOSE(flow_sample(classifier_free_guidance(model, labels, 2, 3.0), x1, grid, FlowSolver::kEuler),
                  flow_sample(guided, x1, grid, FlowSolver::kEuler), 1e-12);
}

TEST(FlowSampler, RefusesSamplersOfTheOtherObjectiveAndBadTimes) {
  Denoiser v = [](const at::Tensor& x, const at::Tensor&) { return x; };
  const at::Tensor x = torch::randn({2, 3});
  ExpectThrowContains<std::invalid_argument>(
      [] { check_sampler_objective(SamplerKind::kDDIM, Objective::kFlow); },
      {"sample.sampler = ddim cannot sample a model trained with diffusion.objective = flow",
       "use sample.sampler = euler or heun"});
  ExpectThrowContains<std::invalid_argument>(
      [] { check_sampler_objective(SamplerKind::kHeun, Objective::kDDPM); },
      {"sample.sampler = heun cannot sample a model trained with diffusion.objective = ddpm",
       "use sample.sampler = ddim or ddpm"});
  for (auto s : {SamplerKind::kDDIM, SamplerKind::kDDPM}) EXPECT_NO_THROW(check_sampler_objective(s, Objective::kDDPM));
  for (auto s : {SamplerKind::kEuler, SamplerKind::kHeun}) EXPECT_NO_THROW(check_sampler_objective(s, Objective::kFlow));
  ExpectThrowContains<std::invalid_argument>([] { sampler_kinds().parse("rk4", "sample.sampler"); },
                                             {"sample.sampler = 'rk4': expected one of ddim, ddpm, euler, heun"});
  for (auto s : {FlowSolver::kEuler, FlowSolver::kHeun}) EXPECT_EQ(flow_solvers().parse(to_string(s), "k"), s);
  ExpectThrowContains<c10::Error>([&] { flow_sample(v, x, {1.0}, FlowSolver::kEuler); }, {"1 times give no step"});
  ExpectThrowContains<c10::Error>([&] { flow_sample(v, x, {0.0, 1.0}, FlowSolver::kEuler); },
                                  {"times must be strictly descending, but position 1 holds 1 after 0"});
  ExpectThrowContains<c10::Error>([&] { flow_sample(v, x, {1.5, 0.0}, FlowSolver::kEuler); },
                                  {"time 1.5 at position 0 is outside [0, 1]"});
  Denoiser bad = [](const at::Tensor& x, const at::Tensor&) { return x.sum(1); };
  ExpectThrowContains<c10::Error>([&] { flow_sample(bad, x, {1.0, 0.0}, FlowSolver::kHeun); },
                                  {"the model returned shape [2] for x of shape [2, 3] at t = 1"});
}

}  // namespace
}  // namespace lf::core
