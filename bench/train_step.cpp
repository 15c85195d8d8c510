// Step time of one denoiser training step as launch/ldm_trainer.cpp runs it (keyed draws,
// q_sample, forward, eps-MSE, backward, grad-norm clip, core::AdamW, core::EMA), for the
// comparison with PyTorch in bench/overhead_vs_pytorch.sh; bench/torch_unet.py is the baseline.
// Usage: bench_train_step [--key=value ...]   (--help lists the keys)
//   one round: --warmup steps, then --steps timed steps; prints one JSON line of per-step times.
//   --dump=DIR: writes DIR/weights.safetensors (initial weights), DIR/io.safetensors (a fixed
//   batch, the forward output, the gradients and the parameters and EMA after one step) for
//   torch_unet.py --verify, then exits.
#include <ATen/ATen.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/adamw.h"
#include "core/diffusion.h"
#include "core/ema.h"
#include "core/keyed_rng.h"
#include "core/safetensors.h"
#include "core/state_dict.h"
#include "core/unet.h"
#include "core/util/strings.h"
#include "launch/threads.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace core = lf::core;

double ms_since(Clock::time_point a) {
  return std::chrono::duration<double, std::milli>(Clock::now() - a).count();
}

// Every option with its default; the Python side (torch_unet.py) takes the same keys.
struct Args {
  std::map<std::string, std::string> v = {
      {"batch", "128"},        {"threads", "1"},      {"steps", "5"},         {"warmup", "2"},
      {"channels", "64"},      {"channel_mult", "1,2,2"}, {"num_res_blocks", "1"},
      {"attention_ds", "2,4"}, {"head_channels", "32"}, {"num_classes", "10"},
      {"norm_groups", "32"},   {"size", "8"},         {"lr", "1e-3"},         {"weight_decay", "0"},
      {"grad_clip", "1"},      {"ema_decay", "0.999"}, {"label_dropout", "0.1"},
      {"rng", "keyed"},        {"zero_grad", "zero"},        {"seed", "0"},         {"init", ""},           {"dump", ""}};

  void parse(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        std::printf("bench_train_step options (--key=value):\n");
        for (auto& [k, d] : v) std::printf("  --%s (default '%s')\n", k.c_str(), d.c_str());
        std::exit(0);
      }
      const auto eq = a.find('=');
      if (a.rfind("--", 0) != 0 || eq == std::string::npos)
        throw std::invalid_argument(lf::str("bench_train_step: argument '", a, "' is not --key=value"));
      std::string key = a.substr(2, eq - 2);
      std::replace(key.begin(), key.end(), '-', '_');
      if (!v.count(key))
        throw std::invalid_argument(lf::str("bench_train_step: unknown option --", key, " (see --help)"));
      v[key] = a.substr(eq + 1);
    }
  }
  int64_t i(const std::string& k) const { return std::stoll(v.at(k)); }
  double d(const std::string& k) const { return std::stod(v.at(k)); }
  const std::string& s(const std::string& k) const { return v.at(k); }
  std::vector<int64_t> list(const std::string& k) const {
    std::vector<int64_t> out;
    for (const auto& p : lf::split(v.at(k), ','))
      if (!lf::trim(p).empty()) out.push_back(std::stoll(p));
    return out;
  }
};

core::UNetOptions unet_options(const Args& a) {
  core::UNetOptions o;
  o.model_channels = a.i("channels");
  o.channel_mult = a.list("channel_mult");
  o.num_res_blocks = a.i("num_res_blocks");
  o.attention_ds = a.list("attention_ds");
  o.head_channels = a.i("head_channels");
  o.num_classes = a.i("num_classes");
  o.norm_groups = a.i("norm_groups");
  return o;
}

struct Batch {
  at::Tensor x0, t, noise, labels;
};

// The batch of step `step`: x0 stands in for the loader's latents (ATen normals, as on the
// Python side); t, noise and label dropout come from the keyed generator as in
// ldm_trainer.cpp's prepare() (--rng=keyed) or from ATen's generator (--rng=aten).
Batch make_batch(const Args& a, const core::Diffusion& diffusion, int64_t step) {
  const int64_t n = a.i("batch"), size = a.i("size"), classes = a.i("num_classes");
  const uint64_t seed = static_cast<uint64_t>(a.i("seed"));
  Batch b;
  b.x0 = at::randn({n, 4, size, size});
  at::Tensor labels = classes > 0 ? at::randint(0, classes, {n}, at::kLong) : at::Tensor();
  if (a.s("rng") == "keyed") {
    at::Tensor idx = at::arange(step * n, (step + 1) * n, at::kLong);
    b.t = core::keyed_randint(seed, core::stream_id(core::Stream::kTimestep), 0, idx, 0, diffusion.timesteps());
    b.noise = core::keyed_normal(seed, core::stream_id(core::Stream::kNoise), 0, idx, {4, size, size},
                                 at::TensorOptions().dtype(at::kFloat));
    if (labels.defined() && a.d("label_dropout") > 0) {
      at::Tensor drop = core::keyed_bernoulli(seed, core::stream_id(core::Stream::kLabelDrop), 0, idx,
                                              a.d("label_dropout"));
      labels = at::where(drop, at::full_like(labels, classes), labels);
    }
  } else if (a.s("rng") == "aten") {
    b.t = at::randint(0, diffusion.timesteps(), {n}, at::kLong);
    b.noise = at::randn_like(b.x0);
    if (labels.defined() && a.d("label_dropout") > 0)
      labels = at::where(at::rand({n}) < a.d("label_dropout"), at::full_like(labels, classes), labels);
  } else {
    throw std::invalid_argument(lf::str("bench_train_step: --rng=", a.s("rng"), ", expected keyed or aten"));
  }
  b.labels = labels;
  return b;
}

struct Trainer {
  core::UNet model;
  core::Diffusion diffusion{core::DiffusionOptions{}};
  std::vector<at::Tensor> params;
  std::unique_ptr<core::AdamW> optimizer;
  std::unique_ptr<core::EMA> ema;
  double grad_clip = 1.0, lr = 1e-3, ema_decay = 0.999;
  bool set_to_none = false;
  core::AdamW::Named named;

  explicit Trainer(const Args& a) : model(unet_options(a)) {
    if (!a.s("init").empty()) core::load_state_dict(*model, core::load_safetensors(a.s("init")).tensors);
    for (auto& item : model->named_parameters()) {
      named.emplace_back(item.key(), item.value());
      params.push_back(item.value());
    }
    optimizer = std::make_unique<core::AdamW>(named, core::AdamWOptions{a.d("lr"), 0.9, 0.999, 1e-8, a.d("weight_decay")});
    ema_decay = a.d("ema_decay");
    reset_ema();
    grad_clip = a.d("grad_clip");
    if (a.s("zero_grad") != "zero" && a.s("zero_grad") != "none")
      throw std::invalid_argument(lf::str("bench_train_step: --zero_grad=", a.s("zero_grad"), ", expected zero or none"));
    set_to_none = a.s("zero_grad") == "none";
    lr = a.d("lr");
    model->train();
  }

  // Starts the EMA at the current weights (as the trainer does after loading them).
  void reset_ema() { ema = std::make_unique<core::EMA>(named, ema_decay, true); }

  // One step as ldm_trainer.cpp's loop (one rank, no accumulation, f32); times in ms.
  std::map<std::string, double> step(const Batch& b, at::Tensor* out_keep = nullptr) {
    std::map<std::string, double> ms;
    auto t0 = Clock::now();
    at::Tensor out = model->forward(diffusion.q_sample(b.x0, b.t, b.noise), b.t, b.labels);
    at::Tensor loss = diffusion.per_sample_loss(out, b.x0, b.noise, b.t).sum() / static_cast<double>(b.x0.size(0));
    ms["forward"] = ms_since(t0);
    auto t1 = Clock::now();
    loss.backward();
    (void)loss.item<double>();
    ms["backward"] = ms_since(t1);
    auto t2 = Clock::now();
    const double gnorm = core::global_grad_norm(params);
    core::clip_grad_norm(params, grad_clip, gnorm);
    ms["clip"] = ms_since(t2);
    auto t3 = Clock::now();
    optimizer->step(lr);
    ms["adamw"] = ms_since(t3);
    auto t4 = Clock::now();
    ema->update(params);
    ms["ema"] = ms_since(t4);
    auto t5 = Clock::now();
    // The trainer zeroes the gradients in place; --zero_grad=none drops them instead (what
    // PyTorch 2.x's zero_grad does by default), which saves the fill and lets the next backward
    // write the gradients instead of accumulating into them.
    for (auto& p : params)
      if (p.grad().defined()) {
        if (set_to_none)
          p.mutable_grad() = at::Tensor();
        else
          p.mutable_grad().zero_();
      }
    ms["zero"] = ms_since(t5);
    ms["optimizer"] = ms_since(t2);
    if (out_keep) *out_keep = out.detach();
    return ms;
  }
};

// The fixed batch and one step's results for torch_unet.py --verify.
void dump(const Args& a) {
  const std::string dir = a.s("dump");
  std::filesystem::create_directories(dir);
  Trainer tr(a);
  {  // Perturb every weight: the zero-initialised output layers would make the output 0 and
     // most gradients 0, which would compare equal whatever the rest of the network does.
    torch::NoGradGuard ng;
    for (auto& p : tr.params) p.add_(at::randn_like(p) * 0.05);
  }
  tr.reset_ema();
  core::save_safetensors(dir + "/weights.safetensors", core::state_dict(*tr.model));
  torch::manual_seed(1234);
  Batch b = make_batch(a, tr.diffusion, 0);
  core::TensorMap io = {{"x0", b.x0}, {"t", b.t}, {"noise", b.noise}};
  if (b.labels.defined()) io["labels"] = b.labels;
  {  // eval-mode output on x0 itself: the plain forward comparison
    torch::NoGradGuard ng;
    io["out_eval"] = tr.model->forward(b.x0, b.t, b.labels);
  }
  at::Tensor xt = tr.diffusion.q_sample(b.x0, b.t, b.noise);
  io["x_t"] = xt;
  // Gradients of the step (before clipping), then the parameters and EMA after it.
  at::Tensor out = tr.model->forward(xt, b.t, b.labels);
  at::Tensor loss = tr.diffusion.per_sample_loss(out, b.x0, b.noise, b.t).sum() / static_cast<double>(b.x0.size(0));
  loss.backward();
  io["out_train"] = out.detach();
  io["loss"] = loss.detach().reshape({1});
  const double gnorm = core::global_grad_norm(tr.params);
  io["grad_norm"] = at::tensor({gnorm}, at::kDouble);
  for (auto& item : tr.model->named_parameters()) io["grad." + item.key()] = item.value().grad().clone();
  core::clip_grad_norm(tr.params, tr.grad_clip, gnorm);
  tr.optimizer->step(tr.lr);
  tr.ema->update(tr.params);
  for (auto& item : tr.model->named_parameters()) io["after." + item.key()] = item.value().detach().clone();
  const auto& names = tr.ema->names();
  for (size_t i = 0; i < names.size(); ++i) io["ema." + names[i]] = tr.ema->averages()[i];
  core::save_safetensors(dir + "/io.safetensors", io);
  std::printf("wrote %s/weights.safetensors (%lld parameters) and %s/io.safetensors (loss %.6f, grad norm %.6f)\n",
              dir.c_str(), static_cast<long long>(core::count_parameters(*tr.model)), dir.c_str(),
              loss.item<double>(), gnorm);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0.0 : (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]));
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Args a;
    a.parse(argc, argv);
    lf::launch::set_threads(static_cast<int>(a.i("threads")));
    torch::manual_seed(static_cast<uint64_t>(a.i("seed")));
    if (!a.s("dump").empty()) {
      dump(a);
      return 0;
    }
    Trainer tr(a);
    const int64_t warmup = a.i("warmup"), steps = a.i("steps");
    std::map<std::string, std::vector<double>> phases;
    for (int64_t s = 0; s < warmup + steps; ++s) {
      auto t0 = Clock::now();
      Batch b = make_batch(a, tr.diffusion, s);
      const double data_ms = ms_since(t0);
      auto ms = tr.step(b);
      const double total = ms_since(t0);
      if (s < warmup) continue;
      ms["data"] = data_ms;
      ms["step"] = total;
      for (auto& [k, x] : ms) phases[k].push_back(x);
    }
    // One JSON line: the side, settings, per-step totals and per-phase medians (ms).
    std::string json = lf::str("{\"side\": \"ours\", \"threads\": ", a.i("threads"), ", \"batch\": ", a.i("batch"),
                               ", \"params\": ", core::count_parameters(*tr.model), ", \"step_ms\": [");
    for (size_t i = 0; i < phases["step"].size(); ++i) json += lf::str(i ? ", " : "", phases["step"][i]);
    json += "]";
    for (const char* k : {"data", "forward", "backward", "clip", "adamw", "ema", "zero", "optimizer", "step"})
      json += lf::str(", \"", k, "_median_ms\": ", median(phases[k]));
    std::printf("%s}\n", json.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
