// Tests of core/ema: the warm-up formula, closed-form averages after k updates, copy-out, and
// the checkpoint state (an interrupted EMA resumes exactly).
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>

#include "core/ema.h"

namespace lf::core {
namespace {

NamedTensors make_params() {
  return {{"conv.weight", at::full({3, 2}, 4.0, at::kDouble).requires_grad_()},
          {"conv.bias", at::full({3}, -2.0, at::kDouble).requires_grad_()}};
}

std::vector<at::Tensor> tensors_of(const NamedTensors& named) {
  std::vector<at::Tensor> out;
  for (const auto& [name, t] : named) out.push_back(t);
  return out;
}

TEST(EMA, WarmupDecayFollowsLitEma) {
  EMA ema(make_params(), 0.99);
  auto params = tensors_of(make_params());
  EXPECT_DOUBLE_EQ(ema.next_decay(), 2.0 / 11.0);
  for (int64_t n = 1; n <= 2000; ++n) {
    // LitEma.forward: num_updates += 1, then decay = min(decay, (1 + n) / (10 + n)).
    const double want = std::min(0.99, (1.0 + n) / (10.0 + n));
    ASSERT_DOUBLE_EQ(ema.next_decay(), want) << "update " << n;
    ema.update(params);
    ASSERT_EQ(ema.num_updates(), n);
  }
  EXPECT_DOUBLE_EQ(ema.next_decay(), 0.99);  // (1 + n) / (10 + n) passes 0.99 at n = 891
  EMA plain(make_params(), 0.9, /*warmup=*/false);
  EXPECT_DOUBLE_EQ(plain.next_decay(), 0.9);
}

TEST(EMA, AverageAfterKUpdatesMatchesClosedForm) {
  // Parameters jump from their initial value s0 to a constant c and stay there; after k updates
  // the average is c + (s0 - c) prod_i d_i.
  for (bool warmup : {true, false}) {
    SCOPED_TRACE(warmup);
    auto named = make_params();
    EMA ema(named, 0.95, warmup);
    auto params = tensors_of(named);
    {
      at::NoGradGuard g;
      params[0].fill_(1.0);
      params[1].fill_(3.0);
    }
    double prod = 1.0;
    for (int k = 1; k <= 60; ++k) {
      prod *= warmup ? std::min(0.95, (1.0 + k) / (10.0 + k)) : 0.95;
      ema.update(params);
      const double w = 1.0 + (4.0 - 1.0) * prod, b = 3.0 + (-2.0 - 3.0) * prod;
      ASSERT_NEAR(ema.averages()[0].max().item<double>(), w, 1e-12) << "k=" << k;
      ASSERT_NEAR(ema.averages()[0].min().item<double>(), w, 1e-12) << "k=" << k;
      ASSERT_NEAR(ema.averages()[1].max().item<double>(), b, 1e-12) << "k=" << k;
    }
    // The parameters themselves are untouched by update().
    EXPECT_EQ(params[0].max().item<double>(), 1.0);
  }
}

TEST(EMA, CopyToWritesTheAveragesIntoTheModel) {
  auto named = make_params();
  EMA ema(named, 0.5, false);
  auto params = tensors_of(named);
  {
    at::NoGradGuard g;
    params[0].fill_(0.0);
  }
  ema.update(params);  // weight average = 0.5 * 4 + 0.5 * 0 = 2
  ema.copy_to(params);
  EXPECT_TRUE(at::allclose(params[0], at::full({3, 2}, 2.0, at::kDouble)));
  EXPECT_TRUE(params[0].requires_grad());  // still a trainable leaf
  EXPECT_TRUE(at::allclose(params[1], at::full({3}, -2.0, at::kDouble)));
}

TEST(EMA, StateRestoresAnInterruptedAverageExactly) {
  auto named = make_params();
  auto params = tensors_of(named);
  auto step = [&](int k) {
    at::NoGradGuard g;
    params[0].fill_(std::sin(k));
    params[1].fill_(std::cos(k));
  };
  EMA straight(named, 0.99);
  EMA first(named, 0.99);
  for (int k = 0; k < 30; ++k) {
    step(k);
    straight.update(params);
    first.update(params);
  }
  NamedTensors saved;
  for (const auto& [name, t] : first.state()) saved.emplace_back(name, t.clone());
  ASSERT_EQ(saved.size(), 3u);
  EXPECT_EQ(saved.back().first, EMA::kNumUpdatesKey);
  EXPECT_EQ(saved.back().second.item<int64_t>(), 30);

  EMA resumed(make_params(), 0.99);
  resumed.load_state(saved);
  EXPECT_EQ(resumed.num_updates(), 30);
  for (int k = 30; k < 60; ++k) {
    step(k);
    straight.update(params);
    resumed.update(params);
  }
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_TRUE(at::equal(straight.averages()[i], resumed.averages()[i])) << named[i].first;
  }
}

TEST(EMA, ErrorsNameTheCulprit) {
  auto message = [](auto fn) {
    try {
      fn();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("<no exception>");
  };
  EXPECT_NE(message([] { EMA(make_params(), 1.5); }).find("EMA decay is 1.5"), std::string::npos);
  EXPECT_NE(message([] {
              EMA({{"w", at::zeros({1})}, {"w", at::zeros({1})}}, 0.9);
            }).find("'w' appears twice"),
            std::string::npos);
  EXPECT_NE(message([] { EMA({{"num_updates", at::zeros({1})}}, 0.9); }).find("reserved"),
            std::string::npos);

  EMA ema(make_params(), 0.9);
  auto params = tensors_of(make_params());
  EXPECT_NE(message([&] { ema.update({params[0]}); }).find("got 1 parameters, the EMA tracks 2"),
            std::string::npos);
  EXPECT_NE(message([&] { ema.update({params[0], at::zeros({4}, at::kDouble)}); })
                .find("parameter 1 ('conv.bias')"),
            std::string::npos);

  auto state = ema.state();
  auto missing = NamedTensors(state.begin() + 1, state.end());
  EXPECT_NE(message([&] { ema.load_state(missing); }).find("key 'conv.weight' is missing"),
            std::string::npos);
  auto wrong = state;
  wrong[1].second = at::zeros({5}, at::kDouble);
  EXPECT_NE(message([&] { ema.load_state(wrong); }).find("key 'conv.bias' has shape [5]"),
            std::string::npos);
  auto extra = state;
  extra.emplace_back("head.weight", at::zeros({1}));
  EXPECT_NE(message([&] { ema.load_state(extra); }).find("'head.weight' is not a parameter"),
            std::string::npos);
}

}  // namespace
}  // namespace lf::core
