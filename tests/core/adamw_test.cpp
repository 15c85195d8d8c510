// AdamW against PyTorch's torch.optim.AdamW (golden values from tools/golden_adamw.py), the
// fused CPU path against the tensor-op path, state round trip, and gradient clipping.
#include <gtest/gtest.h>

#include "core/adamw.h"

namespace lf::core {
namespace {

const std::vector<std::vector<double>> kGrads = {
    {0.1, -0.2, 0.3, 0.0}, {-0.4, 0.5, 0.25, 1e-3}, {0.05, 0.05, -0.6, 2.0}};

at::Tensor run(at::Tensor p, AdamW& opt) {
  for (const auto& g : kGrads) {
    p.mutable_grad() = at::tensor(g, at::kDouble).view(p.sizes());
    opt.step(0.01);
  }
  return p;
}

TEST(AdamW, MatchesTorchOptimAdamWGolden) {
  at::Tensor p = at::tensor(std::vector<double>{0.5, -1.25, 2.0, 0.0}, at::kDouble);
  AdamW opt({{"p", p}}, {0.01, 0.9, 0.99, 1e-8, 0.1});
  run(p, opt);
  std::vector<double> want_p = {0.49762460386454765, -1.2446812213559255, 1.9752954847795654,
                                -0.013779331044633043};
  std::vector<double> want_m = {-0.022899999999999997, 0.03379999999999999, -0.01319999999999999,
                                0.20008999999999996};
  std::vector<double> want_v = {0.0017070100000000016, 0.0028920400000000024, 0.005100840000000004,
                                0.040000009900000036};
  auto st = opt.state();
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(p[i].item<double>(), want_p[i], 1e-15) << "param " << i;
    EXPECT_NEAR(st[0].second[i].item<double>(), want_m[i], 1e-15) << "exp_avg " << i;
    EXPECT_NEAR(st[1].second[i].item<double>(), want_v[i], 1e-15) << "exp_avg_sq " << i;
  }
  EXPECT_EQ(opt.steps(), 3);
}

TEST(AdamW, FusedPathEqualsTensorOpPath) {
  at::Tensor base = at::randn({64, 33}, at::kFloat);
  at::Tensor a = base.clone();                 // contiguous: fused loop
  at::Tensor b = base.t().contiguous().t();        // non-contiguous: tensor ops
  ASSERT_FALSE(b.is_contiguous());
  AdamW oa({{"a", a}}, {1e-3, 0.9, 0.999, 1e-8, 0.01});
  AdamW ob({{"b", b}}, {1e-3, 0.9, 0.999, 1e-8, 0.01});
  for (int s = 0; s < 5; ++s) {
    at::Tensor g = at::randn({64, 33});
    a.mutable_grad() = g.clone();
    b.mutable_grad() = g.t().contiguous().t();
    oa.step(1e-3);
    ob.step(1e-3);
  }
  EXPECT_LT((a - b).abs().max().item<float>(), 1e-6) << "a contiguous " << a.is_contiguous() << " b strides " << b.strides() << " max " << (a - b).abs().max().item<float>() << " mean change " << (a - base).abs().mean().item<float>();
}

TEST(AdamW, GradScaleEqualsPrescaledGradientsBitwise) {
  // The trainer sums gradients over 2^k ranks and passes 1/2^k here instead of a pass of its
  // own: the result must be bit-for-bit that of averaged gradients, on both paths, and the
  // gradients themselves are left unscaled.
  for (bool contiguous : {true, false}) {
    at::Tensor base = at::randn({48, 20}, at::kFloat);
    at::Tensor a = contiguous ? base.clone() : base.t().contiguous().t();
    at::Tensor b = contiguous ? base.clone() : base.t().contiguous().t();
    AdamW oa({{"a", a}}, {1e-3, 0.9, 0.999, 1e-8, 0.01});
    AdamW ob({{"b", b}}, {1e-3, 0.9, 0.999, 1e-8, 0.01});
    for (int s = 0; s < 4; ++s) {
      at::Tensor summed = at::randn({48, 20}) * 4;
      a.mutable_grad() = summed.clone();
      b.mutable_grad() = summed * 0.25;
      oa.step(1e-3, 0.25);
      ob.step(1e-3);
      EXPECT_TRUE(at::equal(a.grad(), summed)) << "grad_scale must not write the gradients";
    }
    EXPECT_TRUE(at::equal(a, b)) << "contiguous " << contiguous << ": max diff " << (a - b).abs().max().item<float>();
    EXPECT_TRUE(at::equal(oa.state()[0].second, ob.state()[0].second));
    EXPECT_TRUE(at::equal(oa.state()[1].second, ob.state()[1].second));
    // A wrong scale must show: the negative control of this test.
    at::Tensor c = base.clone();
    AdamW oc({{"c", c}}, {1e-3, 0.9, 0.999, 1e-8, 0.01});
    c.mutable_grad() = at::randn({48, 20}) * 4;
    oc.step(1e-3, 0.5);
    at::Tensor d = base.clone();
    AdamW od({{"d", d}}, {1e-3, 0.9, 0.999, 1e-8, 0.01});
    d.mutable_grad() = c.grad() * 0.25;
    od.step(1e-3);
    EXPECT_FALSE(at::equal(oc.state()[0].second, od.state()[0].second));
  }
}

TEST(AdamW, StateRoundTripContinuesIdentically) {
  at::Tensor p1 = at::randn({10}, at::kDouble), p2 = p1.clone();
  AdamW o1({{"w", p1}}, {}), o2({{"w", p2}}, {});
  at::Tensor g = at::randn({10}, at::kDouble);
  p1.mutable_grad() = g.clone();
  o1.step(1e-2);
  std::map<std::string, at::Tensor> saved;
  for (auto& [k, v] : o1.state()) saved[k] = v.clone();
  p2.detach().copy_(p1.detach());
  o2.load_state(saved);
  p1.mutable_grad() = g.clone();
  p2.mutable_grad() = g.clone();
  o1.step(1e-2);
  o2.step(1e-2);
  EXPECT_TRUE(at::equal(p1, p2));
  EXPECT_EQ(o2.steps(), 2);
}

TEST(AdamW, LoadStateNamesMissingEntries) {
  at::Tensor p = at::zeros({3});
  AdamW o({{"layer.weight", p}}, {});
  try {
    o.load_state({{"step", at::scalar_tensor(1, at::kLong)}});
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("missing exp_avg.layer.weight"), std::string::npos) << e.what();
  }
}

TEST(GradClip, ScalesToMaxNorm) {
  at::Tensor a = at::zeros({2}), b = at::zeros({1});
  a.mutable_grad() = at::tensor({3.0f, 0.0f});
  b.mutable_grad() = at::tensor({4.0f});
  double norm = global_grad_norm({a, b});
  EXPECT_NEAR(norm, 5.0, 1e-9);
  clip_grad_norm({a, b}, 1.0, norm);
  EXPECT_NEAR(global_grad_norm({a, b}), 1.0, 1e-5);
  clip_grad_norm({a, b}, 10.0, 1.0);  // already below: unchanged
  EXPECT_NEAR(global_grad_norm({a, b}), 1.0, 1e-5);
}

}  // namespace
}  // namespace lf::core
