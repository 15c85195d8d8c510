// Tests of core/state_dict: dotted names of parameters and buffers, one error listing every
// missing, unexpected and mis-shaped key, dtype conversion, and no partial loads.
#include <gtest/gtest.h>

#include "core/state_dict.h"
#include "tests/core/models_test_support.h"

namespace lf::core {
namespace {

using test::ExpectThrowContains;

struct NetImpl : torch::nn::Module {
  NetImpl() {
    fc = register_module("fc", torch::nn::Linear(3, 2));
    blocks = register_module("blocks", torch::nn::ModuleList(torch::nn::Linear(2, 2), torch::nn::Linear(2, 1)));
    steps = register_buffer("steps", torch::zeros({1}, torch::kLong));
  }
  torch::nn::Linear fc{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  at::Tensor steps;
};
TORCH_MODULE(Net);

TEST(StateDict, NamesParametersAndBuffersWithDots) {
  Net net;
  const TensorMap sd = state_dict(*net);
  std::vector<std::string> names;
  for (const auto& [k, v] : sd) names.push_back(k);
  EXPECT_EQ(names, (std::vector<std::string>{"blocks.0.bias", "blocks.0.weight", "blocks.1.bias",
                                             "blocks.1.weight", "fc.bias", "fc.weight", "steps"}));
  EXPECT_FALSE(sd.at("fc.weight").requires_grad());
  EXPECT_EQ(count_parameters(*net), 3 * 2 + 2 + 4 + 2 + 2 + 1);
}

TEST(StateDict, LoadsWithDtypeConversion) {
  Net a, b;
  TensorMap sd;
  for (const auto& [k, v] : state_dict(*a)) sd[k] = v.to(torch::kDouble) + 1;
  load_state_dict(*b, sd);
  for (const auto& [k, v] : state_dict(*b)) {
    EXPECT_EQ(v.scalar_type(), k == "steps" ? torch::kLong : torch::kFloat) << k;
    EXPECT_TRUE(torch::allclose(v.to(torch::kDouble), sd.at(k))) << k;
  }
  EXPECT_TRUE(b->fc->weight.requires_grad());  // still a trainable parameter
}

TEST(StateDict, ReportsEveryProblemAtOnceAndLoadsNothing) {
  Net net;
  const TensorMap before = state_dict(*net);
  const at::Tensor fc_before = before.at("fc.weight").clone();
  TensorMap sd;
  for (const auto& [k, v] : before) sd[k] = torch::ones_like(v);
  sd.erase("blocks.1.bias");
  sd.erase("steps");
  sd["fc.wieght"] = torch::ones({2, 3});
  sd["extra"] = torch::ones({1});
  sd["blocks.0.weight"] = torch::ones({2, 3});
  ExpectThrowContains<std::invalid_argument>(
      [&] { load_state_dict(*net, sd, true, "model.safetensors"); },
      {"model.safetensors: cannot load into the model",
       "1 shape mismatches: blocks.0.weight (expected [2, 2], found [2, 3])",
       "2 missing keys: blocks.1.bias, steps", "2 unexpected keys: extra, fc.wieght"});
  EXPECT_TRUE(torch::equal(net->fc->weight, fc_before)) << "a failed load must not modify the module";

  // Non-strict: missing and unexpected keys are reported back, shape mismatches still fail.
  ExpectThrowContains<std::invalid_argument>([&] { load_state_dict(*net, sd, false); },
                                             {"state dict: cannot load", "blocks.0.weight"});
  sd["blocks.0.weight"] = torch::ones({2, 2});
  StateDictReport r = load_state_dict(*net, sd, false);
  EXPECT_EQ(r.missing, (std::vector<std::string>{"blocks.1.bias", "steps"}));
  EXPECT_EQ(r.unexpected, (std::vector<std::string>{"extra", "fc.wieght"}));
  EXPECT_TRUE(torch::equal(net->fc->weight, torch::ones({2, 3})));
}

TEST(StateDict, HintsAtTheClosestKey) {
  Net net;
  TensorMap sd = state_dict(*net);
  sd["fc.wieght"] = sd.at("fc.weight");
  sd.erase("fc.weight");
  ExpectThrowContains<std::invalid_argument>([&] { load_state_dict(*net, sd); },
                                             {"unexpected 'fc.wieght' resembles missing 'fc.weight'"});
}

}  // namespace
}  // namespace lf::core
