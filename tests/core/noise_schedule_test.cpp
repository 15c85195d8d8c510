// Tests of core/noise_schedule: each schedule against its closed form computed here with scalar
// arithmetic, monotonicity, the cosine clip, names and errors.
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>

#include "core/noise_schedule.h"

namespace lf::core {
namespace {

constexpr double kPi = 3.14159265358979323846;

double at_t(const at::Tensor& x, int64_t t) { return x[t].item<double>(); }

// Checks every derived quantity of `s` against its definition from the betas, at every step.
void expect_consistent(const NoiseSchedule& s) {
  const int64_t T = s.timesteps();
  double cumprod = 1.0;
  for (int64_t t = 0; t < T; ++t) {
    double beta = at_t(s.betas(), t);
    cumprod *= 1.0 - beta;
    ASSERT_NEAR(at_t(s.alphas(), t), 1.0 - beta, 1e-15) << "t=" << t;
    ASSERT_NEAR(at_t(s.alphas_cumprod(), t), cumprod, 1e-14 * cumprod) << "t=" << t;
    ASSERT_NEAR(at_t(s.sqrt_alphas_cumprod(), t), std::sqrt(cumprod), 1e-14) << "t=" << t;
    ASSERT_NEAR(at_t(s.sqrt_one_minus_alphas_cumprod(), t), std::sqrt(1.0 - cumprod), 1e-14)
        << "t=" << t;
    ASSERT_NEAR(at_t(s.snr(), t), cumprod / (1.0 - cumprod), 1e-12 * (cumprod / (1 - cumprod)))
        << "t=" << t;
  }
}

// Strictly decreasing alpha-bar and SNR (more noise at every step), betas in (0, 0.999].
void expect_monotone(const NoiseSchedule& s) {
  auto ac = s.alphas_cumprod(), snr = s.snr(), b = s.betas();
  const int64_t T = s.timesteps();
  EXPECT_GT(b.min().item<double>(), 0.0);
  EXPECT_LE(b.max().item<double>(), 0.999);
  if (T > 1) {
    EXPECT_TRUE((ac.narrow(0, 1, T - 1) < ac.narrow(0, 0, T - 1)).all().item<bool>());
    EXPECT_TRUE((snr.narrow(0, 1, T - 1) < snr.narrow(0, 0, T - 1)).all().item<bool>());
  }
}

TEST(NoiseSchedule, LinearMatchesDDPMForAnyT) {
  for (int64_t T : {1000, 4000, 250, 21}) {
    SCOPED_TRACE(T);
    auto s = NoiseSchedule::make(ScheduleKind::kLinear, T);
    EXPECT_EQ(s->kind(), ScheduleKind::kLinear);
    ASSERT_EQ(s->timesteps(), T);
    const double scale = 1000.0 / T, lo = scale * 1e-4, hi = scale * 0.02;
    for (int64_t t : {int64_t{0}, T / 3, T / 2, T - 1}) {
      EXPECT_NEAR(at_t(s->betas(), t), lo + (hi - lo) * t / (T - 1), 1e-15) << "t=" << t;
    }
    expect_consistent(*s);
    expect_monotone(*s);
    EXPECT_TRUE((s->betas().narrow(0, 1, T - 1) > s->betas().narrow(0, 0, T - 1)).all().item<bool>());
  }
  // T = 1000 reproduces DDPM's published endpoints and alpha-bar_T ~ 4.0e-5.
  auto s = NoiseSchedule::make(ScheduleKind::kLinear, 1000);
  EXPECT_DOUBLE_EQ(at_t(s->betas(), 0), 1e-4);
  EXPECT_DOUBLE_EQ(at_t(s->betas(), 999), 0.02);
  EXPECT_NEAR(at_t(s->alphas_cumprod(), 999), 4.035e-5, 1e-8);
}

TEST(NoiseSchedule, LinearClipsForVeryShortSchedules) {
  // T = 10: scale 100 gives betas up to 2.0; they are clipped at 0.999.
  auto s = NoiseSchedule::make(ScheduleKind::kLinear, 10);
  EXPECT_DOUBLE_EQ(at_t(s->betas(), 9), 0.999);
  EXPECT_NEAR(at_t(s->betas(), 0), 0.01, 1e-15);
  expect_consistent(*s);
  auto one = NoiseSchedule::make(ScheduleKind::kLinear, 1);
  EXPECT_NEAR(at_t(one->betas(), 0), 0.1, 1e-15);  // linspace of one point is its start
}

TEST(NoiseSchedule, ScaledLinearMatchesLatentDiffusion) {
  for (int64_t T : {1000, 50, 2, 1}) {
    SCOPED_TRACE(T);
    auto s = NoiseSchedule::make(ScheduleKind::kScaledLinear, T);
    const double a = std::sqrt(0.00085), b = std::sqrt(0.012);
    for (int64_t t : {int64_t{0}, T / 2, T - 1}) {
      double root = T == 1 ? a : a + (b - a) * t / (T - 1);
      EXPECT_NEAR(at_t(s->betas(), t), root * root, 1e-16) << "t=" << t;
    }
    expect_consistent(*s);
    expect_monotone(*s);
  }
  // Stable Diffusion's values: alpha-bar at t = 999 is 0.0046600 (diffusers' PNDM/DDIM configs).
  auto s = NoiseSchedule::make(ScheduleKind::kScaledLinear, 1000);
  EXPECT_NEAR(at_t(s->alphas_cumprod(), 999), 0.0046600, 5e-7);
  EXPECT_NEAR(at_t(s->alphas_cumprod(), 0), 1 - 0.00085, 1e-15);
}

TEST(NoiseSchedule, CosineMatchesNicholDhariwal) {
  for (int64_t T : {1000, 100, 4}) {
    SCOPED_TRACE(T);
    auto s = NoiseSchedule::make(ScheduleKind::kCosine, T);
    auto f = [&](double t) {
      double c = std::cos((t / T + 0.008) / 1.008 * kPi / 2);
      return c * c;
    };
    // Unclipped steps telescope: alpha-bar_t = f(t + 1) / f(0) (eq. 17 with the t+1 convention).
    for (int64_t t = 0; t < T - 1; ++t) {
      ASSERT_LT(at_t(s->betas(), t), 0.999) << "t=" << t;
      ASSERT_NEAR(at_t(s->alphas_cumprod(), t), f(t + 1) / f(0), 1e-12) << "t=" << t;
    }
    // The last step would have beta = 1 (f(T) = 0): it is clipped to 0.999.
    EXPECT_DOUBLE_EQ(at_t(s->betas(), T - 1), 0.999);
    expect_consistent(*s);
    expect_monotone(*s);
  }
  auto one = NoiseSchedule::make(ScheduleKind::kCosine, 1);
  EXPECT_DOUBLE_EQ(at_t(one->betas(), 0), 0.999);
}

TEST(NoiseSchedule, SnrGathersAtTimesteps) {
  auto s = NoiseSchedule::make(ScheduleKind::kScaledLinear, 1000);
  auto t = at::tensor(std::vector<int64_t>{0, 999, 500, 500}, at::kLong).view({2, 2});
  auto snr = s->snr(t);
  ASSERT_EQ(snr.sizes(), t.sizes());
  EXPECT_EQ(snr.scalar_type(), at::kDouble);
  for (int64_t i = 0; i < 4; ++i) {
    int64_t ti = t.view(-1)[i].item<int64_t>();
    double ac = at_t(s->alphas_cumprod(), ti);
    EXPECT_NEAR(snr.view(-1)[i].item<double>(), ac / (1 - ac), 1e-12 * ac / (1 - ac));
  }
  EXPECT_THROW(s->snr(t.to(at::kInt)), c10::Error);
}

TEST(NoiseSchedule, NamesRoundTripAndBadInputIsNamed) {
  for (auto kind : {ScheduleKind::kLinear, ScheduleKind::kScaledLinear, ScheduleKind::kCosine}) {
    EXPECT_EQ(schedule_kinds().parse(to_string(kind), "diffusion.schedule"), kind);
  }
  try {
    schedule_kinds().parse("cosin", "diffusion.schedule");
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("'cosin'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("linear, scaled_linear, cosine"), std::string::npos) << msg;
  }
  try {
    NoiseSchedule::make(ScheduleKind::kCosine, 0);
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("timesteps is 0"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lf::core
