// Tests of core/diffusers_vae: a diffusers-layout folder written by hand (config.json text and
// weights named by diffusers' structure, current and old attention names) loads and reproduces
// the golden outputs; export -> import is exact; every config and weight problem is listed.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/diffusers_vae.h"
#include "core/state_dict.h"
#include "core/util/fs.h"
#include "tests/core/models_test_support.h"
#include "tests/core/vae_golden_support.h"

namespace lf::core {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::ExpectThrowContains;

// ---- weights named as diffusers' AutoencoderKL registers them, built without our VAE ----------

void conv(TensorMap& m, const std::string& name, int64_t out, int64_t in, int64_t k) {
  m[name + ".weight"] = torch::zeros({out, in, k, k});
  m[name + ".bias"] = torch::zeros({out});
}
void norm(TensorMap& m, const std::string& name, int64_t c) {
  m[name + ".weight"] = torch::zeros({c});
  m[name + ".bias"] = torch::zeros({c});
}
void linear(TensorMap& m, const std::string& name, int64_t c) {
  m[name + ".weight"] = torch::zeros({c, c});
  m[name + ".bias"] = torch::zeros({c});
}
void resnet(TensorMap& m, const std::string& p, int64_t in, int64_t out) {
  norm(m, p + ".norm1", in);
  conv(m, p + ".conv1", out, in, 3);
  norm(m, p + ".norm2", out);
  conv(m, p + ".conv2", out, out, 3);
  if (in != out) conv(m, p + ".conv_shortcut", out, in, 1);
}
void mid_block(TensorMap& m, const std::string& p, int64_t c) {
  resnet(m, p + ".resnets.0", c, c);
  norm(m, p + ".attentions.0.group_norm", c);
  for (const char* proj : {"to_q", "to_k", "to_v", "to_out.0"}) linear(m, p + ".attentions.0." + proj, c);
  resnet(m, p + ".resnets.1", c, c);
}

// The golden model (in 3, out 3, latent 4, block_out_channels [16, 32], 1 layer, 8 groups).
TensorMap hand_built_golden_weights() {
  TensorMap m;
  conv(m, "encoder.conv_in", 16, 3, 3);
  resnet(m, "encoder.down_blocks.0.resnets.0", 16, 16);
  conv(m, "encoder.down_blocks.0.downsamplers.0.conv", 16, 16, 3);
  resnet(m, "encoder.down_blocks.1.resnets.0", 16, 32);
  mid_block(m, "encoder.mid_block", 32);
  norm(m, "encoder.conv_norm_out", 32);
  conv(m, "encoder.conv_out", 8, 32, 3);
  conv(m, "quant_conv", 8, 8, 1);
  conv(m, "post_quant_conv", 4, 4, 1);
  conv(m, "decoder.conv_in", 32, 4, 3);
  mid_block(m, "decoder.mid_block", 32);
  resnet(m, "decoder.up_blocks.0.resnets.0", 32, 32);
  resnet(m, "decoder.up_blocks.0.resnets.1", 32, 32);
  conv(m, "decoder.up_blocks.0.upsamplers.0.conv", 32, 32, 3);
  resnet(m, "decoder.up_blocks.1.resnets.0", 32, 16);
  resnet(m, "decoder.up_blocks.1.resnets.1", 16, 16);
  norm(m, "decoder.conv_norm_out", 16);
  conv(m, "decoder.conv_out", 3, 16, 3);
  test::golden_fill(m);
  return m;
}

// As diffusers < 0.14 saved them: query/key/value/proj_attn with conv-shaped weights.
TensorMap to_legacy_names(const TensorMap& m) {
  TensorMap out;
  const std::vector<std::pair<std::string, std::string>> renames = {
      {".to_q.", ".query."}, {".to_k.", ".key."}, {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."}};
  for (const auto& [name, t] : m) {
    std::string key = name;
    at::Tensor v = t;
    for (const auto& [now, old] : renames) {
      auto pos = key.find(now);
      if (pos == std::string::npos) continue;
      key.replace(pos, now.size(), old);
      if (v.dim() == 2) v = old == ".proj_attn." ? v.view({v.size(0), v.size(1), 1}) : v.view({v.size(0), v.size(1), 1, 1});
    }
    out[key] = v;
  }
  return out;
}

const char* kGoldenConfig = R"({
  "_class_name": "AutoencoderKL",
  "_diffusers_version": "0.4.2",
  "act_fn": "silu",
  "block_out_channels": [16, 32],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
  "in_channels": 3,
  "latent_channels": 4,
  "layers_per_block": 1,
  "norm_num_groups": 8,
  "out_channels": 3,
  "sample_size": 8,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"]
})";

void write_folder(const std::string& dir, const std::string& config, const TensorMap& weights) {
  fs::create_directories(dir);
  atomic_write_file(dir + "/config.json", config);
  save_safetensors(dir + "/diffusion_pytorch_model.safetensors", weights, {{"format", "pt"}});
}

void expect_reproduces_golden(VAE vae) {
  // Our model with the same (float32) weights must agree exactly; the float64 golden values
  // within float32 rounding of the weights.
  VAE reference(test::golden_vae_options());
  TensorMap sd = state_dict(*reference);
  test::golden_fill(sd);
  load_state_dict(*reference, sd);
  torch::NoGradGuard no_grad;
  const at::Tensor x = test::golden_input().to(torch::kFloat);
  DiagonalGaussian a = vae->encode(x), b = reference->encode(x);
  EXPECT_TRUE(torch::equal(a.mean(), b.mean()) && torch::equal(a.logvar(), b.logvar()));
  const at::Tensor rec = vae->decode(a.mode());
  EXPECT_TRUE(torch::equal(rec, reference->decode(b.mode())));
  const at::Tensor flat = rec.to(torch::kDouble).flatten();
  EXPECT_NEAR(flat.sum().item<double>(), test::kGoldenRec.sum, 1e-3);
  for (const auto& [i, v] : test::kGoldenRec.at) EXPECT_NEAR(flat[i].item<double>(), v, 1e-4) << i;
  const at::Tensor mean = a.mean().to(torch::kDouble).flatten();
  for (const auto& [i, v] : test::kGoldenMean.at) EXPECT_NEAR(mean[i].item<double>(), v, 1e-4) << i;
}

TEST(DiffusersVAE, LoadsAHandWrittenFolderAndReproducesOutputs) {
  test::TempDir dir("dvae_load");
  const TensorMap weights = hand_built_golden_weights();
  ASSERT_EQ(static_cast<int64_t>(weights.size()), test::kGoldenKeys);
  write_folder(dir.path(), kGoldenConfig, weights);
  VAE vae = load_diffusers_vae(dir.path());
  EXPECT_EQ(vae->options().block_out_channels, (std::vector<int64_t>{16, 32}));
  EXPECT_EQ(vae->options().norm_num_groups, 8);
  EXPECT_DOUBLE_EQ(vae->options().scaling_factor, 0.18215);  // diffusers' default when absent
  expect_reproduces_golden(vae);
}

TEST(DiffusersVAE, LoadsOldAttentionKeyNames) {
  test::TempDir dir("dvae_legacy");
  const TensorMap legacy = to_legacy_names(hand_built_golden_weights());
  ASSERT_TRUE(legacy.count("encoder.mid_block.attentions.0.query.weight"));
  ASSERT_EQ(legacy.at("decoder.mid_block.attentions.0.proj_attn.weight").dim(), 3);
  json cfg = json::parse(kGoldenConfig);
  cfg["scaling_factor"] = 0.13025;
  cfg["force_upcast"] = false;
  write_folder(dir.path(), cfg.dump(), legacy);
  VAE vae = load_diffusers_vae(dir.path());
  EXPECT_DOUBLE_EQ(vae->options().scaling_factor, 0.13025);
  expect_reproduces_golden(vae);
}

TEST(DiffusersVAE, ExportImportRoundTripIsExact) {
  test::TempDir dir("dvae_roundtrip");
  torch::manual_seed(7);
  VAEOptions o;
  o.block_out_channels = {32, 64};
  o.mid_block_add_attention = false;
  o.scaling_factor = 0.5;
  VAE vae(o);
  save_diffusers_vae(vae, dir.path() + "/exported");
  const json cfg = json::parse(read_file(dir.path() + "/exported/config.json"));
  EXPECT_EQ(cfg["_class_name"], "AutoencoderKL");
  EXPECT_EQ(cfg["down_block_types"], json({"DownEncoderBlock2D", "DownEncoderBlock2D"}));
  EXPECT_EQ(cfg["up_block_types"], json({"UpDecoderBlock2D", "UpDecoderBlock2D"}));
  EXPECT_EQ(cfg["act_fn"], "silu");
  EXPECT_EQ(cfg["mid_block_add_attention"], false);
  EXPECT_EQ(load_safetensors(dir.path() + "/exported/diffusion_pytorch_model.safetensors").metadata.at("format"), "pt");

  VAE back = load_diffusers_vae(dir.path() + "/exported");
  EXPECT_EQ(back->options().block_out_channels, o.block_out_channels);
  EXPECT_EQ(back->options().mid_block_add_attention, false);
  EXPECT_DOUBLE_EQ(back->options().scaling_factor, 0.5);
  EXPECT_EQ(hash_tensors(state_dict(*back)), hash_tensors(state_dict(*vae)));
  torch::NoGradGuard no_grad;
  at::Tensor x = torch::randn({2, 1, 16, 16});
  EXPECT_TRUE(torch::equal(back->forward(x), vae->forward(x)));

  // The single-file form carries its config in the metadata.
  save_vae_file(vae, dir.file("vae.safetensors"));
  VAE single = load_vae_file(dir.file("vae.safetensors"));
  EXPECT_EQ(single->options().block_out_channels, o.block_out_channels);
  EXPECT_TRUE(torch::equal(single->forward(x), vae->forward(x)));
  EXPECT_EQ(hash_safetensors_file(dir.file("vae.safetensors")), hash_tensors(state_dict(*vae)));
}

TEST(DiffusersVAE, ListsEveryMissingUnexpectedAndMisshapedWeight) {
  test::TempDir dir("dvae_keys");
  TensorMap w = hand_built_golden_weights();
  w.erase("decoder.conv_out.bias");
  w.erase("encoder.mid_block.attentions.0.to_k.weight");
  w["encoder.mid_block.attentions.0.extra.weight"] = torch::zeros({2});
  w["quant_conv.weight"] = torch::zeros({8, 8, 3, 3});
  write_folder(dir.path(), kGoldenConfig, w);
  const std::string file = dir.path() + "/diffusion_pytorch_model.safetensors";
  ExpectThrowContains<std::invalid_argument>(
      [&] { load_diffusers_vae(dir.path()); },
      {file, "2 missing keys: decoder.conv_out.bias, encoder.mid_block.attentions.0.to_k.weight",
       "1 unexpected keys: encoder.mid_block.attentions.0.extra.weight",
       "1 shape mismatches: quant_conv.weight (expected [8, 8, 1, 1], found [8, 8, 3, 3])"});
}

TEST(DiffusersVAE, ConfigErrorsAreListedTogether) {
  const std::string src = "vae/config.json";
  auto expect_error = [&](const json& cfg, std::vector<std::string> parts) {
    parts.insert(parts.begin(), src);
    ExpectThrowContains<std::invalid_argument>([&] { vae_options_from_diffusers_config(cfg, src); }, parts);
  };
  json cfg = json::parse(kGoldenConfig);
  cfg.erase("in_channels");
  cfg.erase("layers_per_block");
  cfg["layer_per_block"] = 2;
  cfg["colour"] = "red";
  expect_error(cfg, {"missing keys: in_channels, layers_per_block",
                     "unknown keys: colour, layer_per_block (did you mean layers_per_block?)"});
  cfg = json::parse(kGoldenConfig);
  cfg["act_fn"] = "relu";
  cfg["down_block_types"][1] = "AttnDownEncoderBlock2D";
  cfg["up_block_types"] = json::array({"UpDecoderBlock2D"});
  cfg["_class_name"] = "VQModel";
  expect_error(cfg, {"act_fn = \"relu\" is not supported (only \"silu\")",
                     "down_block_types[1] = \"AttnDownEncoderBlock2D\" is not supported",
                     "up_block_types has 1 entries but block_out_channels has 2",
                     "_class_name = \"VQModel\" is not supported (only \"AutoencoderKL\")"});
  cfg = json::parse(kGoldenConfig);
  cfg["latent_channels"] = "4";
  cfg["block_out_channels"] = json::array({16, 32.5});
  cfg["use_quant_conv"] = false;
  cfg["shift_factor"] = 0.1159;
  cfg["mid_block_add_attention"] = 1;
  expect_error(cfg, {"latent_channels = \"4\" (expected an integer)",
                     "block_out_channels = [16,32.5] (expected a list of integers)",
                     "use_quant_conv = false is not supported (only true)",
                     "shift_factor = 0.1159 is not supported (only null)",
                     "mid_block_add_attention = 1 (expected true or false)"});
  cfg = json::parse(kGoldenConfig);
  cfg["norm_num_groups"] = 12;
  expect_error(cfg, {"vae.channels[0] = 16 is not divisible by vae.norm_groups = 12"});
  expect_error(json::array(), {"expected a JSON object"});
}

TEST(DiffusersVAE, MissingFilesAreNamed) {
  test::TempDir dir("dvae_files");
  ExpectThrowContains<std::runtime_error>([&] { load_diffusers_vae(dir.file("nope")); },
                                          {dir.file("nope"), "not a directory"});
  fs::create_directories(dir.file("pickle"));
  std::ofstream(dir.file("pickle/diffusion_pytorch_model.bin")) << "x";
  ExpectThrowContains<std::runtime_error>(
      [&] { load_diffusers_vae(dir.file("pickle")); },
      {"diffusion_pytorch_model.safetensors: not found", "pickle", "convert it to safetensors"});
  write_folder(dir.file("noconfig"), "{", hand_built_golden_weights());
  ExpectThrowContains<std::invalid_argument>([&] { load_diffusers_vae(dir.file("noconfig")); },
                                             {"noconfig/config.json: not valid JSON"});
  save_safetensors(dir.file("plain.safetensors"), {{"w", torch::zeros({1})}});
  ExpectThrowContains<std::invalid_argument>([&] { load_vae_file(dir.file("plain.safetensors")); },
                                             {"plain.safetensors", "no \"config\""});
}

}  // namespace
}  // namespace lf::core
