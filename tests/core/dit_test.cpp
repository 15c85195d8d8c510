// Tests of core/dit: shapes over patch sizes and grids, patchify/unpatchify and the patch
// embedding against the strided convolution, the position embedding's closed form, adaLN-Zero
// (zero output and identity blocks at initialisation, gates), a block against a plain
// float64 reference, class conditioning and the null class, per-sample independence, the
// reference's initialisation and parameter names, the preset sizes, gradients against finite
// differences, determinism, and every validation message.
#include <gtest/gtest.h>

#include <torch/nn/functional/conv.h>

#include <cmath>
#include <iostream>

#include "core/dit.h"
#include "core/state_dict.h"
#include "tests/core/models_test_support.h"

namespace lf::core {
namespace {

using test::ExpectThrowContains;

DiTOptions tiny(int64_t classes = 0, int64_t patch = 2) {
  DiTOptions o;
  o.patch_size = patch;
  o.depth = 2;
  o.width = 32;
  o.heads = 4;
  o.num_classes = classes;
  return o;
}

void perturb(torch::nn::Module& m, double scale = 0.1) {
  torch::NoGradGuard no_grad;
  for (auto& p : m.parameters()) p.add_(torch::randn_like(p) * scale);
}

TEST(DiT, OutputShapesAcrossPatchSizesGridsAndConditioning) {
  torch::NoGradGuard no_grad;
  for (int64_t p : {1, 2, 4}) {
    for (int64_t classes : {0, 3}) {
      DiTOptions o = tiny(classes, p);
      o.in_channels = 3;
      o.out_channels = 5;
      DiT net(o);
      EXPECT_EQ(net->size_multiple(), p);
      for (auto [h, w] : {std::pair<int64_t, int64_t>{8, 8}, {4, 12}, {p, p}}) {
        at::Tensor y = classes ? torch::tensor({0, 3}) : at::Tensor();
        at::Tensor out = net->forward(torch::randn({2, 3, h, w}), torch::tensor({1.0, 500.0}), y);
        EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 5, h, w})) << "p " << p << " size " << h << "x" << w;
      }
    }
  }
}

TEST(DiT, PatchifyLayoutAndRoundTrip) {
  const int64_t p = 2, c = 3;
  at::Tensor x = torch::arange(2 * c * 4 * 6, torch::kDouble).view({2, c, 4, 6});
  at::Tensor tokens = patchify(x, p);
  ASSERT_EQ(tokens.sizes(), (std::vector<int64_t>{2, 6, p * p * c}));
  // Token (i, j) = i * cols + j holds x[c, i p + pr, j p + pc] at (pr p + pc) c + c.
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t pr = 0; pr < p; ++pr)
        for (int64_t pc = 0; pc < p; ++pc)
          for (int64_t ch = 0; ch < c; ++ch)
            EXPECT_EQ(tokens[1][i * 3 + j][(pr * p + pc) * c + ch].item<double>(),
                      x[1][ch][i * p + pr][j * p + pc].item<double>());
  EXPECT_TRUE(torch::equal(unpatchify(tokens, p, 2, 3, c), x));
  at::Tensor y = torch::randn({3, 4, 8, 12});
  for (int64_t q : {1, 2, 4}) EXPECT_TRUE(torch::equal(unpatchify(patchify(y, q), q, 8 / q, 12 / q, 4), y)) << q;
}

TEST(DiT, PatchEmbeddingIsTheStridedConvolutionPlusPositions) {
  torch::manual_seed(1);
  DiTOptions o = tiny(0, 2);
  DiT net(o);
  perturb(*net);
  net->to(torch::kDouble);
  at::Tensor x = torch::randn({2, 4, 6, 8}, torch::kDouble);
  namespace F = torch::nn::functional;
  at::Tensor conv = F::conv2d(x, net->patch_embed->weight, F::Conv2dFuncOptions().bias(net->patch_embed->bias).stride(2));
  at::Tensor want = conv.flatten(2).transpose(1, 2) + sincos_pos_embed_2d(o.width, 3, 4);
  LF_EXPECT_CLOSE(net->embed(x), want, 1e-12);
}

TEST(DiT, PositionEmbeddingMatchesTheClosedForm) {
  const int64_t dim = 16, rows = 3, cols = 5, q = dim / 4;
  at::Tensor e = sincos_pos_embed_2d(dim, rows, cols);
  ASSERT_EQ(e.sizes(), (std::vector<int64_t>{rows * cols, dim}));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      for (int64_t k = 0; k < q; ++k) {
        const double w = std::pow(10000.0, -static_cast<double>(k) / q);
        const int64_t tok = i * cols + j;  // row-major, as the patches
        EXPECT_NEAR(e[tok][k].item<double>(), std::sin(j * w), 1e-15);
        EXPECT_NEAR(e[tok][q + k].item<double>(), std::cos(j * w), 1e-15);
        EXPECT_NEAR(e[tok][2 * q + k].item<double>(), std::sin(i * w), 1e-15);
        EXPECT_NEAR(e[tok][3 * q + k].item<double>(), std::cos(i * w), 1e-15);
      }
}

TEST(DiT, AdaLNZeroStartsAtZeroOutputWithIdentityBlocks) {
  DiT net(tiny(4));
  at::Tensor x = torch::randn({2, 4, 8, 8});
  at::Tensor t = torch::tensor({10.0, 900.0}), y = torch::tensor({1, 4});
  at::Tensor out = net->forward(x, t, y);
  EXPECT_EQ(out.abs().max().item<double>(), 0.0);  // final layer zero-initialised
  // Every block is the identity: its gates (and shifts and scales) start at zero.
  at::Tensor h = net->embed(x), c = net->conditioning(x, t, y);
  for (const auto& b : *net->blocks) EXPECT_TRUE(torch::equal(b->as<DiTBlock>()->forward(h, c), h));
  // The gradient still reaches the final layer, and after a perturbation every parameter.
  out.pow(2).sum().backward();
  perturb(*net);
  for (auto& p : net->parameters()) p.mutable_grad() = at::Tensor();
  net->forward(x, t, y).pow(2).sum().backward();
  for (const auto& p : net->named_parameters())
    EXPECT_TRUE(p.value().grad().defined() && p.value().grad().abs().sum().item<double>() > 0)
        << p.key() << " gets no gradient";
}

TEST(DiT, ZeroGatesMakeABlockTheIdentityWhateverShiftAndScale) {
  torch::manual_seed(2);
  DiTBlock block(16, 2, 64);
  perturb(*block);
  {
    torch::NoGradGuard no_grad;
    for (int64_t gate : {2, 5}) {  // gate_msa, gate_mlp rows of the modulation
      block->ada_ln->weight.slice(0, gate * 16, (gate + 1) * 16).zero_();
      block->ada_ln->bias.slice(0, gate * 16, (gate + 1) * 16).zero_();
    }
  }
  at::Tensor x = torch::randn({3, 5, 16}), c = torch::randn({3, 16});
  EXPECT_TRUE(torch::equal(block->forward(x, c), x));
}

// DiTBlock written out in float64 with plain ops: LayerNorm by its definition, attention head
// by head with an explicit softmax, GELU's tanh form.
at::Tensor reference_block(DiTBlockImpl& b, const at::Tensor& x, const at::Tensor& c, int64_t heads) {
  const int64_t dim = x.size(2), d = dim / heads;
  auto lin = [](const at::Tensor& v, const torch::nn::Linear& l) { return v.matmul(l->weight.t()) + l->bias; };
  auto norm = [](const at::Tensor& v) {
    at::Tensor mu = v.mean(-1, true);
    at::Tensor var = (v - mu).pow(2).mean(-1, true);
    return (v - mu) / (var + 1e-6).sqrt();
  };
  at::Tensor m = lin(c, b.ada_ln);  // [N, 6D]
  auto part = [&](int64_t k) { return m.slice(1, k * dim, (k + 1) * dim).unsqueeze(1); };
  at::Tensor h = norm(x) * (1 + part(1)) + part(0);
  at::Tensor qkv = lin(h, b.attn->qkv);
  std::vector<at::Tensor> outs;
  for (int64_t hd = 0; hd < heads; ++hd) {
    at::Tensor q = qkv.slice(2, hd * d, (hd + 1) * d), k = qkv.slice(2, dim + hd * d, dim + (hd + 1) * d),
               v = qkv.slice(2, 2 * dim + hd * d, 2 * dim + (hd + 1) * d);
    at::Tensor s = q.matmul(k.transpose(1, 2)) / std::sqrt(static_cast<double>(d));
    at::Tensor e = (s - std::get<0>(s.max(-1, true))).exp();
    outs.push_back((e / e.sum(-1, true)).matmul(v));
  }
  at::Tensor y = x + part(2) * lin(at::cat(outs, 2), b.attn->proj);
  at::Tensor f = lin(norm(y) * (1 + part(4)) + part(3), b.fc1);
  f = 0.5 * f * (1 + at::tanh(std::sqrt(2.0 / std::acos(-1.0)) * (f + 0.044715 * f.pow(3))));
  return y + part(5) * lin(f, b.fc2);
}

TEST(DiT, BlockMatchesAPlainFloat64Reference) {
  torch::manual_seed(3);
  DiTBlock block(24, 3, 48);
  perturb(*block, 0.3);
  block->to(torch::kDouble);
  at::Tensor x = torch::randn({2, 7, 24}, torch::kDouble), c = torch::randn({2, 24}, torch::kDouble);
  torch::NoGradGuard no_grad;
  LF_EXPECT_CLOSE(block->forward(x, c), reference_block(*block, x, c, 3), 1e-12);
}

TEST(DiT, ClassLabelsTimestepsAndTheNullClass) {
  torch::manual_seed(4);
  DiT net(tiny(3));
  perturb(*net);
  torch::NoGradGuard no_grad;
  at::Tensor x = torch::randn({2, 4, 8, 8});
  at::Tensor t = torch::tensor({7, 7});
  at::Tensor a = net->forward(x, t, torch::tensor({0, 1}));
  at::Tensor b = net->forward(x, t, torch::tensor({2, 1}));
  EXPECT_GT((a[0] - b[0]).abs().max().item<double>(), 1e-4);  // the label matters
  EXPECT_TRUE(torch::equal(a[1], b[1]));                       // and only for its sample
  EXPECT_TRUE(torch::equal(net->forward(x, t), net->forward(x, t, torch::tensor({3, 3}))));  // null class
  EXPECT_TRUE(torch::equal(net->forward(x, torch::tensor({7.0f, 7.0f})), net->forward(x, t)));
  EXPECT_TRUE(torch::equal(net->forward(x, torch::tensor(7)), net->forward(x, t)));
  // Flow passes 1000 t: fractional times are distinct inputs.
  EXPECT_GT((net->forward(x, torch::tensor({7.5, 7.5})) - net->forward(x, t)).abs().max().item<double>(), 1e-6);
}

TEST(DiT, SamplesAreIndependentOfTheirBatch) {
  torch::manual_seed(5);
  DiT net(tiny(4));
  perturb(*net);
  torch::NoGradGuard no_grad;
  at::Tensor x = torch::randn({3, 4, 8, 8});
  at::Tensor t = torch::tensor({5.0, 400.0, 999.0}), y = torch::tensor({0, 4, 2});
  at::Tensor all = net->forward(x, t, y);
  for (int64_t i = 0; i < 3; ++i)
    LF_EXPECT_CLOSE(net->forward(x.slice(0, i, i + 1), t.slice(0, i, i + 1), y.slice(0, i, i + 1)),
                    all.slice(0, i, i + 1), 1e-5);
}

TEST(DiT, InitialisationAndParameterNamesFollowTheReference) {
  torch::manual_seed(6);
  DiTOptions o = tiny(10);
  o.width = 128;
  DiT net(o);
  const TensorMap sd = state_dict(*net);
  const int64_t d = 128;
  auto shape = [&](const std::string& k) { return sd.at(k).sizes().vec(); };
  EXPECT_EQ(shape("x_embedder.proj.weight"), (std::vector<int64_t>{d, 4, 2, 2}));
  EXPECT_EQ(shape("t_embedder.mlp.0.weight"), (std::vector<int64_t>{d, 256}));
  EXPECT_EQ(shape("t_embedder.mlp.2.weight"), (std::vector<int64_t>{d, d}));
  EXPECT_EQ(shape("y_embedder.embedding_table.weight"), (std::vector<int64_t>{11, d}));
  EXPECT_EQ(shape("blocks.1.attn.qkv.weight"), (std::vector<int64_t>{3 * d, d}));
  EXPECT_EQ(shape("blocks.1.attn.proj.weight"), (std::vector<int64_t>{d, d}));
  EXPECT_EQ(shape("blocks.1.mlp.fc1.weight"), (std::vector<int64_t>{4 * d, d}));
  EXPECT_EQ(shape("blocks.1.mlp.fc2.weight"), (std::vector<int64_t>{d, 4 * d}));
  EXPECT_EQ(shape("blocks.0.adaLN_modulation.1.weight"), (std::vector<int64_t>{6 * d, d}));
  EXPECT_EQ(shape("final_layer.linear.weight"), (std::vector<int64_t>{2 * 2 * 4, d}));
  EXPECT_EQ(shape("final_layer.adaLN_modulation.1.weight"), (std::vector<int64_t>{2 * d, d}));
  EXPECT_EQ(sd.size(), 2u + 4u + 1u + 2 * 10u + 4u);  // no buffers: the position embedding is computed
  // Xavier-uniform linears: bound sqrt(6 / (fan_in + fan_out)), std bound / sqrt(3).
  auto xavier = [&](const std::string& k, double fan_in, double fan_out) {
    const double bound = std::sqrt(6.0 / (fan_in + fan_out));
    at::Tensor w = sd.at(k);
    EXPECT_LE(w.abs().max().item<double>(), bound) << k;
    EXPECT_NEAR(w.std().item<double>(), bound / std::sqrt(3.0), 0.05 * bound) << k;
  };
  xavier("blocks.0.attn.qkv.weight", d, 3 * d);
  xavier("blocks.1.mlp.fc2.weight", 4 * d, d);
  xavier("x_embedder.proj.weight", 4 * 2 * 2, d);  // as a Linear on its [D, C p p] view
  EXPECT_NEAR(sd.at("y_embedder.embedding_table.weight").std().item<double>(), 0.02, 0.002);
  EXPECT_NEAR(sd.at("t_embedder.mlp.0.weight").std().item<double>(), 0.02, 0.002);
  EXPECT_NEAR(sd.at("t_embedder.mlp.2.weight").std().item<double>(), 0.02, 0.002);
  for (const auto& [k, v] : sd) {
    const bool zero = k.find("bias") != std::string::npos || k.find("adaLN_modulation") != std::string::npos ||
                      k.rfind("final_layer.linear", 0) == 0;
    if (zero) {
      EXPECT_EQ(v.abs().max().item<double>(), 0.0) << k;
    }
  }
}

TEST(DiT, ParameterCountsOfThePresets) {
  for (DiTOptions o : {tiny(0), tiny(10, 1), [] {
         DiTOptions x = tiny(3, 4);
         x.mlp_ratio = 2.5;
         x.out_channels = 8;
         return x;
       }()}) {
    EXPECT_EQ(count_parameters(*DiT(o)), o.num_parameters());
  }
  // The paper's sizes on the Fashion-MNIST latents (4x8x8, patch 2, 10 classes).
  for (const auto& name : dit_preset_names()) {
    DiTSize s = dit_preset(name);
    DiTOptions o;
    o.depth = s.depth;
    o.width = s.width;
    o.heads = s.heads;
    o.num_classes = 10;
    EXPECT_NO_THROW(o.validate()) << name;
    std::cout << "[ " << name << "/2 at 4x8x8, 10 classes ] " << o.num_parameters() << " parameters\n";
    RecordProperty(name + "_parameters", std::to_string(o.num_parameters()));
    if (name == "dit-s") {
      EXPECT_EQ(count_parameters(*DiT(o)), o.num_parameters());
    }
  }
  EXPECT_EQ(dit_preset("dit-xl").width, 1152);
  EXPECT_EQ(dit_preset("dit-l").depth, 24);
  ExpectThrowContains<std::invalid_argument>([] { dit_preset("dit-m"); },
                                             {"model.preset = 'dit-m': expected one of dit-s, dit-b, dit-l, dit-xl",
                                              "(Peebles & Xie 2023, Table 1)"});
}

TEST(DiT, GradientsMatchFiniteDifferencesInFloat64) {
  torch::manual_seed(7);
  DiTOptions o;
  o.patch_size = 2;
  o.depth = 2;
  o.width = 8;
  o.heads = 2;
  o.num_classes = 2;
  DiT net(o);
  net->to(torch::kDouble);
  perturb(*net, 0.3);
  at::Tensor x = torch::randn({2, 4, 4, 4}, torch::kDouble), t = torch::tensor({3.0, 700.0}, torch::kDouble);
  at::Tensor y = torch::tensor({1, 2}), r = torch::randn({2, 4, 4, 4}, torch::kDouble);
  auto loss = [&] { return (net->forward(x, t, y) * r).sum(); };
  loss().backward();
  const double h = 1e-6;
  int checked = 0;
  for (const auto& item : net->named_parameters()) {
    at::Tensor p = item.value();
    at::Tensor flat = p.detach().view(-1);
    at::Tensor g = p.grad().view(-1);
    for (int64_t i : {int64_t{0}, flat.numel() / 2, flat.numel() - 1}) {
      torch::NoGradGuard no_grad;
      const double v = flat[i].item<double>();
      flat[i] = v + h;
      const double up = loss().item<double>();
      flat[i] = v - h;
      const double down = loss().item<double>();
      flat[i] = v;
      const double fd = (up - down) / (2 * h), ad = g[i].item<double>();
      EXPECT_NEAR(ad, fd, 1e-7 + 1e-6 * std::abs(fd)) << item.key() << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_EQ(checked, 3 * static_cast<int>(net->parameters().size()));
}

TEST(DiT, InitialisationAndForwardAreDeterministic) {
  torch::manual_seed(8);
  DiT a(tiny(3));
  torch::manual_seed(8);
  DiT b(tiny(3));
  const TensorMap sa = state_dict(*a), sb = state_dict(*b);
  for (const auto& [k, v] : sa) EXPECT_TRUE(torch::equal(v, sb.at(k))) << k;
  perturb(*a);
  at::Tensor x = torch::randn({4, 4, 8, 8}), t = torch::tensor({1, 2, 3, 4}), y = torch::tensor({0, 1, 2, 3});
  EXPECT_TRUE(torch::equal(a->forward(x, t, y), a->forward(x, t, y)));
}

TEST(DiT, RejectsBadInputsWithClearMessages) {
  DiT net(tiny(3, 4));
  at::Tensor t = torch::tensor({1, 2});
  ExpectThrowContains<std::invalid_argument>([&] { net->forward(torch::zeros({2, 4, 6, 8}), t); },
                                             {"DiT: input has shape [2, 4, 6, 8]", "multiples of model.patch_size = 4"});
  ExpectThrowContains<std::invalid_argument>([&] { net->forward(torch::zeros({2, 3, 8, 8}), t); },
                                             {"expected [N, 4, H, W]"});
  ExpectThrowContains<std::invalid_argument>([&] { net->forward(torch::zeros({2, 4, 8, 8}), torch::tensor({1, 2, 3})); },
                                             {"DiT: timesteps have shape [3], expected [2]"});
  ExpectThrowContains<std::invalid_argument>([&] { net->forward(torch::zeros({2, 4, 8, 8}), t, torch::tensor({0, 4})); },
                                             {"DiT: labels range over [0, 4], expected [0, 3] (3 = the null class)"});
  DiT uncond(tiny(0));
  ExpectThrowContains<std::invalid_argument>([&] { uncond->forward(torch::zeros({2, 4, 8, 8}), t, torch::tensor({0, 1})); },
                                             {"DiT: labels given to an unconditional model"});
}

TEST(DiT, ValidateNamesEveryBadField) {
  auto expect_error = [](DiTOptions o, std::vector<std::string> parts) {
    ExpectThrowContains<std::invalid_argument>([&] { o.validate(); }, parts);
  };
  DiTOptions o;
  o.in_channels = 0;
  o.out_channels = -1;
  o.patch_size = 0;
  o.depth = 0;
  expect_error(o, {"invalid DiT options", "model.in_channels = 0 (must be >= 1)", "model.out_channels = -1",
                   "model.patch_size = 0", "model.depth = 0"});
  o = DiTOptions();
  o.width = 30;
  expect_error(o, {"model.width = 30 (must be a positive multiple of 4"});
  o.width = 100;
  expect_error(o, {"model.width = 100 is not divisible by model.heads = 6"});
  o = DiTOptions();
  o.heads = 0;
  expect_error(o, {"model.heads = 0 (must be >= 1)"});
  o = DiTOptions();
  o.mlp_ratio = 0;
  expect_error(o, {"model.mlp_ratio = 0 (must be > 0"});
  o = DiTOptions();
  o.num_classes = -2;
  expect_error(o, {"model.num_classes = -2 (must be >= 0; 0 means unconditional)"});
  ExpectThrowContains<std::invalid_argument>([] { DiTOptions o; o.in_channels = 0; DiT bad(o); }, {"model.in_channels = 0"});
}

}  // namespace
}  // namespace lf::core
