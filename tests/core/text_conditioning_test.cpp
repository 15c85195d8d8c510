// Tests of core/text_conditioning and the text paths of the UNet and the DiT: masked attention
// against attention over the unmasked keys alone, the padding never reaching any output (the
// padding token's embedding can be anything), dropped captions equal to the learned null
// condition and training it, captions changing the prediction once the zero-initialised output
// projections are perturbed, per-sample independence, parameter counts and names, and the
// validation messages.
#include <gtest/gtest.h>

#include <cmath>

#include "core/dit.h"
#include "core/state_dict.h"
#include "core/text_conditioning.h"
#include "core/util/tokenizer.h"
#include "core/unet.h"
#include "tests/core/models_test_support.h"

namespace lf::core {
namespace {

using test::ExpectThrowContains;

constexpr int64_t kLen = 12;

TextInput token_input(const at::Tensor& tok, const at::Tensor& drop = {}) {
  TextInput in;
  in.tokens = tok;
  in.drop = drop;
  return in;
}

TextOptions tiny_text() {
  TextOptions t;
  t.context_length = kLen;
  t.width = 16;
  t.depth = 2;
  t.heads = 2;
  return t;
}

UNetOptions text_unet() {
  UNetOptions o;
  o.model_channels = 16;
  o.channel_mult = {1, 2};
  o.num_res_blocks = 1;
  o.attention_ds = {2};
  o.head_channels = 8;
  o.norm_groups = 8;
  o.text = tiny_text();
  return o;
}

DiTOptions text_dit() {
  DiTOptions o;
  o.patch_size = 2;
  o.depth = 2;
  o.width = 32;
  o.heads = 4;
  o.text = tiny_text();
  return o;
}

at::Tensor tokens(const std::vector<std::string>& captions) { return ByteTokenizer(kLen).encode(captions).tokens; }

void perturb(torch::nn::Module& m, double scale = 0.1) {
  torch::NoGradGuard no_grad;
  for (auto& p : m.parameters()) p.add_(torch::randn_like(p) * scale);
}

TEST(TextConditioning, MaskedAttentionEqualsAttentionOverTheKeptKeysAlone) {
  at::manual_seed(1);
  auto f64 = at::TensorOptions().dtype(at::kDouble);
  at::Tensor q = at::randn({2, 3, 5, 4}, f64), k = at::randn({2, 3, 7, 4}, f64), v = at::randn({2, 3, 7, 4}, f64);
  at::Tensor mask = at::zeros({2, 7}, at::kBool);
  mask[0].narrow(0, 0, 3).fill_(true);  // sample 0 attends to keys 0..2, sample 1 to 0..5
  mask[1].narrow(0, 0, 6).fill_(true);
  at::Tensor out = masked_attention(q, k, v, mask);
  for (int64_t i = 0; i < 2; ++i) {
    const int64_t kept = i == 0 ? 3 : 6;
    at::Tensor ki = k[i].narrow(1, 0, kept), vi = v[i].narrow(1, 0, kept);
    at::Tensor ref = at::matmul(at::softmax(at::matmul(q[i], ki.transpose(-2, -1)) / 2.0, -1), vi);
    EXPECT_LT((out[i] - ref).abs().max().item<double>(), 1e-12) << "sample " << i;
  }
  // No mask: every key.
  at::Tensor all = at::matmul(at::softmax(at::matmul(q, k.transpose(-2, -1)) / 2.0, -1), v);
  EXPECT_LT((masked_attention(q, k, v, {}) - all).abs().max().item<double>(), 1e-12);
}

// The padding is masked as a key in the encoder and in every cross-attention: the padding
// token's embedding changes no output of a text UNet or DiT.
// A network of options `o` in float64 and eval mode, its zero-initialised layers perturbed.
template <typename Net, typename Options>
Net eval_net(const Options& o, uint64_t seed) {
  at::manual_seed(seed);
  Net net(o);
  perturb(*net);
  net->to(at::kDouble);
  net->eval();
  return net;
}

template <typename Net, typename Options>
void padding_never_matters(const Options& o, int64_t side) {
  Net net = eval_net<Net>(o, 2);
  torch::NoGradGuard no_grad;
  at::Tensor x = at::randn({3, 4, side, side}, at::kDouble), t = at::tensor({5, 500, 999}, at::kLong);
  TextInput in = token_input(tokens({"red", "a blue disc", "x"}));
  at::Tensor before = net->forward(x, t, {}, in);
  net->text_encoder->token_embedding->weight[ByteTokenizer::kPad].normal_(0.0, 10.0);
  at::Tensor after = net->forward(x, t, {}, in);
  EXPECT_LT((before - after).abs().max().item<double>(), 1e-12);
}

TEST(TextConditioning, ThePaddingTokenChangesNoOutputOfTheUNetOrTheDiT) {
  padding_never_matters<UNet>(text_unet(), 8);
  padding_never_matters<DiT>(text_dit(), 8);
}

TEST(TextConditioning, DroppedCaptionsAreTheLearnedNullConditionAndTrainIt) {
  at::manual_seed(3);
  TextEncoder enc(tiny_text());
  at::Tensor like = at::zeros({1}, at::kFloat);
  TextInput in = token_input(tokens({"red square", "green bar"}), at::tensor({1, 0}, at::kLong).to(at::kBool));
  TextContext c = enc->forward(in, 2, like);
  TextContext null = enc->forward(TextInput{}, 2, like);
  // Row 0 is the null condition whatever its caption: the learned embedding as the only attended
  // token. Alone, the null context is that one token; in a batch it is padded to the batch's
  // longest caption ("red square": 10 bytes + begin + end), the padding masked.
  EXPECT_EQ(null.embeddings.size(1), 1);
  EXPECT_EQ(c.embeddings.size(1), 12);
  EXPECT_TRUE(at::equal(c.embeddings[0][0], null.embeddings[0][0]));
  EXPECT_TRUE(at::equal(null.embeddings[0][0], enc->null_embedding[0]));
  EXPECT_EQ(c.mask[0].sum().item<int64_t>(), 1);
  EXPECT_TRUE(c.mask[0][0].item<bool>());
  EXPECT_EQ(c.embeddings[0].narrow(0, 1, 11).abs().sum().item<double>(), 0.0);
  // Row 1 is the caption: its tokens are attended up to the end token.
  EXPECT_EQ(c.mask[1].sum().item<int64_t>(), static_cast<int64_t>(std::string("green bar").size()) + 2);
  // The null embedding gets a gradient through a dropped row (it is trained, not fixed).
  c.embeddings.sum().backward();
  ASSERT_TRUE(enc->null_embedding.grad().defined());
  EXPECT_GT(enc->null_embedding.grad().abs().sum().item<double>(), 0.0);
}

template <typename Net, typename Options>
void captions_condition(const Options& o) {
  at::manual_seed(4);
  Net net(o);
  perturb(*net);  // zero-initialised output projections would hide the captions at first
  net->to(at::kDouble);
  net->eval();
  torch::NoGradGuard no_grad;
  at::Tensor x = at::randn({1, 4, 8, 8}, at::kDouble).repeat({3, 1, 1, 1});
  at::Tensor t = at::full({3}, 300, at::kLong);
  at::Tensor out = net->forward(x, t, {}, token_input(tokens({"red square", "blue disc", "red square"})));
  EXPECT_GT((out[0] - out[1]).abs().max().item<double>(), 1e-6) << "another caption, another prediction";
  EXPECT_LT((out[0] - out[2]).abs().max().item<double>(), 1e-12) << "the same caption, the same prediction";
  // Per-sample independence: sample 1 alone equals sample 1 in the batch.
  at::Tensor one = net->forward(x.narrow(0, 1, 1), t.narrow(0, 1, 1), {}, token_input(tokens({"blue disc"})));
  EXPECT_LT((one[0] - out[1]).abs().max().item<double>(), 1e-12);
  // The null condition (no tokens) is the same as every caption dropped.
  at::Tensor none = net->forward(x, t, {}, TextInput{});
  at::Tensor dropped = net->forward(x, t, {}, token_input(tokens({"a", "b", "c"}), at::ones({3}, at::kBool)));
  EXPECT_LT((none - dropped).abs().max().item<double>(), 1e-12);
}

TEST(TextConditioning, CaptionsChangeTheUNetsAndTheDiTsPrediction) {
  captions_condition<UNet>(text_unet());
  captions_condition<DiT>(text_dit());
}

TEST(TextConditioning, ParameterNamesAndCounts) {
  UNet unet(text_unet());
  auto names = state_dict(*unet);
  for (const char* n : {"text_encoder.token_embedding.weight", "text_encoder.position_embedding",
                        "text_encoder.null_embedding", "text_encoder.layers.1.self_attn.to_q.weight",
                        "text_encoder.layers.0.mlp.fc2.bias", "text_encoder.final_layer_norm.weight",
                        "middle_block.0.xattn.transformer_blocks.0.attn2.to_k.weight",
                        "middle_block.0.xattn.transformer_blocks.0.ff.net.0.proj.weight",
                        "middle_block.0.xattn.transformer_blocks.0.ff.net.2.weight",
                        "middle_block.0.xattn.proj_out.weight", "input_blocks.2.xattn.norm.weight"})
    EXPECT_TRUE(names.count(n)) << n;
  EXPECT_FALSE(names.count("middle_block.0.attn.to_q.weight")) << "a text UNet's attention is the spatial transformer";
  // The spatial transformer starts as the identity (proj_out zero), as LDM's.
  EXPECT_EQ(names.at("middle_block.0.xattn.proj_out.weight").abs().sum().item<double>(), 0.0);

  for (bool text : {false, true}) {
    DiTOptions o = text_dit();
    if (!text) o.text = TextOptions{};
    DiT dit(o);
    int64_t count = 0;
    for (const auto& p : dit->parameters()) count += p.numel();
    EXPECT_EQ(count, o.num_parameters()) << (text ? "text" : "no text");
    if (text) {
      auto d = state_dict(*dit);
      EXPECT_TRUE(d.count("blocks.0.cross_attn.to_v.weight"));
      EXPECT_EQ(d.at("blocks.1.cross_attn.to_out.0.weight").abs().sum().item<double>(), 0.0) << "PixArt: zero output";
    }
  }
}

TEST(TextConditioning, ValidationNamesTheKeys) {
  UNetOptions o = text_unet();
  o.num_classes = 10;
  ExpectThrowContains<std::invalid_argument>([&] { UNet{o}; }, {"model.num_classes = 10 with model.context_length = 12"});
  o = text_unet();
  o.text.width = 15;
  ExpectThrowContains<std::invalid_argument>([&] { UNet{o}; }, {"model.text_width = 15 is not a positive multiple of model.text_heads = 2"});
  DiTOptions d = text_dit();
  d.text.context_length = 2;
  ExpectThrowContains<std::invalid_argument>([&] { DiT{d}; }, {"model.context_length = 2 (must be 3..4096"});
  UNet plain(UNetOptions{});
  at::Tensor x = at::zeros({1, 4, 8, 8});
  ExpectThrowContains<std::invalid_argument>([&] { plain->forward(x, at::zeros({1}), {}, token_input(tokens({"a"}))); },
                      {"text input given to a model without text conditioning"});
  UNet net(text_unet());
  ExpectThrowContains<std::invalid_argument>([&] { net->forward(x, at::zeros({1}), {}, token_input(at::zeros({1, 5}, at::kInt))); },
                      {"expected integers [1, 12] (model.context_length = 12)"});
  ExpectThrowContains<std::invalid_argument>(
      [&] { net->forward(x, at::zeros({1}), {}, token_input(at::full({1, kLen}, 300, at::kInt))); },
      {"token ids outside [0, 259)"});
}

// ---- external caption embeddings (a frozen encoder's, cached by encode) -------------------

constexpr int64_t kDim = 6;

template <typename Options>
Options external(Options o) {
  o.text.embedding_dim = kDim;
  return o;
}

// Embeddings [3, kLen, kDim] whose rows hold 2, 5 and 3 tokens (the rest masked).
TextInput embedding_input(at::ScalarType dtype) {
  TextInput in;
  in.embeddings = at::randn({3, kLen, kDim}, dtype);
  in.mask = at::zeros({3, kLen}, at::kByte);
  const int64_t lengths[] = {2, 5, 3};
  for (int64_t r = 0; r < 3; ++r) in.mask[r].narrow(0, 0, lengths[r]).fill_(1);
  return in;
}

template <typename Net, typename Options>
void masked_embeddings_never_matter(const Options& o, int64_t side) {
  Net net = eval_net<Net>(o, 4);
  torch::NoGradGuard no_grad;
  ASSERT_TRUE(net->text_encoder->linear_1);
  EXPECT_FALSE(net->text_encoder->token_embedding);  // no joint encoder to train
  EXPECT_EQ(net->text_embedding_dim(), kDim);
  at::Tensor x = at::randn({3, 4, side, side}, at::kDouble), t = at::tensor({5, 500, 999}, at::kLong);
  TextInput in = embedding_input(at::kDouble);
  at::Tensor before = net->forward(x, t, {}, in);
  // Whatever the masked positions hold changes nothing (only the first 5 columns are computed).
  TextInput noisy = in;
  noisy.embeddings = in.embeddings + 100.0 * in.mask.logical_not().unsqueeze(-1).to(at::kDouble) *
                                         at::randn_like(in.embeddings);
  at::Tensor masked_noise = net->forward(x, t, {}, noisy);
  EXPECT_LT((before - masked_noise).abs().max().template item<double>(), 1e-12);
  // A caption's embedding does matter.
  TextInput other = in;
  other.embeddings = in.embeddings.clone();
  other.embeddings[1][0].add_(1.0);
  at::Tensor changed = net->forward(x, t, {}, other);
  EXPECT_GT((before[1] - changed[1]).abs().max().item<double>(), 1e-6);
  EXPECT_LT((before[0] - changed[0]).abs().max().item<double>(), 1e-12);  // rows are independent
  // Dropped rows are the null condition: the same as no caption at all.
  TextInput dropped = in;
  dropped.drop = at::ones({3}, at::kBool);
  at::Tensor all_dropped = net->forward(x, t, {}, dropped), no_caption = net->forward(x, t, {}, TextInput{});
  EXPECT_LT((all_dropped - no_caption).abs().max().template item<double>(), 1e-12);
  // Tokens are not what this model reads.
  EXPECT_THROW(net->forward(x, t, {}, token_input(tokens({"a", "b", "c"}))), std::invalid_argument);
}

TEST(TextConditioning, ExternalEmbeddingsAreProjectedWithThePaddingMaskedInTheUNetAndTheDiT) {
  masked_embeddings_never_matter<UNet>(external(text_unet()), 8);
  masked_embeddings_never_matter<DiT>(external(text_dit()), 8);
}

TEST(TextConditioning, TheNullOfExternalEmbeddingsIsTheProjectionOfOneZeroEmbedding) {
  at::manual_seed(5);
  TextOptions o = tiny_text();
  o.embedding_dim = kDim;
  TextEncoder enc(o);
  at::Tensor like = at::zeros({1}, at::kFloat);
  TextInput in = embedding_input(at::kFloat);
  in.drop = at::tensor({1, 0, 0}, at::kLong).to(at::kBool);
  TextContext c = enc->forward(in, 3, like);
  EXPECT_EQ(c.embeddings.size(1), 5);  // the batch's longest caption
  torch::NoGradGuard no_grad;
  at::Tensor zero_projected = enc->linear_2(at::gelu(enc->linear_1->bias, "tanh"));
  EXPECT_TRUE(at::allclose(c.embeddings[0][0], zero_projected));
  EXPECT_EQ(c.mask[0].sum().item<int64_t>(), 1);
  EXPECT_EQ(c.mask[1].sum().item<int64_t>(), 5);
  EXPECT_EQ(c.mask[2].sum().item<int64_t>(), 3);
  // Bad inputs name what was expected.
  TextInput bad = embedding_input(at::kFloat);
  bad.mask[1].zero_();
  ExpectThrowContains<std::invalid_argument>([&] { enc->forward(bad, 3, like); }, {"no token set"});
  TextInput wrong = embedding_input(at::kFloat);
  wrong.embeddings = wrong.embeddings.narrow(2, 0, kDim - 1);
  ExpectThrowContains<std::invalid_argument>([&] { enc->forward(wrong, 3, like); }, {"expected floats [3, 12, 6]"});
}

}  // namespace
}  // namespace lf::core
