// Step time of one denoiser training step as launch/ldm_trainer.cpp runs it (keyed draws,
// q_sample, forward, eps-MSE, backward, grad-norm clip, core::AdamW, core::EMA), for the
// comparison with PyTorch in bench/overhead_vs_pytorch.sh; bench/torch_unet.py is the baseline
// (bench/torch_dit.py for --model=dit). --objective=flow trains the flow-matching objective
// instead (keyed t, x_t = (1 - t) x0 + t eps, velocity MSE).
// Usage: bench_train_step [--key=value ...]   (--help lists the keys)
//   one round: --warmup steps, then --steps timed steps; prints one JSON line of per-step times.
//   --profile=1: prints the ops of one step by self CPU time (as torch_unet.py --profile), then exits.
//   --dump=DIR: writes DIR/weights.safetensors (initial weights), DIR/io.safetensors (a fixed
//   batch, the forward output, the gradients and the parameters and EMA after one step) for
//   torch_unet.py --verify, then exits.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/adamw.h"
#include "core/denoiser_options.h"
#include "core/diffusion.h"
#include "core/ema.h"
#include "core/flow.h"
#include "core/keyed_rng.h"
#include "core/safetensors.h"
#include "core/state_dict.h"
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
      {"rng", "keyed"},        {"zero_grad", "zero"},        {"seed", "0"},         {"init", ""},           {"dump", ""},
      {"model", "unet"},       {"patch_size", "2"},   {"depth", "6"},         {"width", "256"},
      {"heads", "4"},          {"mlp_ratio", "4"},    {"objective", "ddpm"},  {"t_sampling", "uniform"},
      {"profile", "0"}};

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

core::DenoiserOptions model_options(const Args& a) {
  core::DenoiserOptions o;
  o.kind = core::denoiser_kinds().parse(a.s("model"), "--model");
  o.unet.model_channels = a.i("channels");
  o.unet.channel_mult = a.list("channel_mult");
  o.unet.num_res_blocks = a.i("num_res_blocks");
  o.unet.attention_ds = a.list("attention_ds");
  o.unet.head_channels = a.i("head_channels");
  o.unet.norm_groups = a.i("norm_groups");
  o.dit.patch_size = a.i("patch_size");
  o.dit.depth = a.i("depth");
  o.dit.width = a.i("width");
  o.dit.heads = a.i("heads");
  o.dit.mlp_ratio = a.d("mlp_ratio");
  o.set_io(4, a.i("num_classes"));
  return o;
}

// The objective of the step: DDPM with eps prediction (the trainer's default) or flow.
struct Objective {
  std::optional<core::Diffusion> ddpm;
  std::optional<core::FlowMatching> flow;

  explicit Objective(const Args& a) {
    core::DiffusionOptions o;
    o.objective = core::objectives().parse(a.s("objective"), "--objective");
    if (o.objective == core::Objective::kFlow) {
      o.t_sampling = core::time_samplings().parse(a.s("t_sampling"), "--t_sampling");
      flow.emplace(o);
    } else {
      ddpm.emplace(o);
    }
  }
  at::Tensor x_t(const at::Tensor& x0, const at::Tensor& t, const at::Tensor& noise) const {
    return flow ? flow->x_t(x0, noise, t) : ddpm->q_sample(x0, t, noise);
  }
  at::Tensor model_time(const at::Tensor& t) const { return flow ? core::FlowMatching::model_time(t) : t; }
  at::Tensor per_sample_loss(const at::Tensor& out, const at::Tensor& x0, const at::Tensor& noise,
                             const at::Tensor& t) const {
    return flow ? flow->per_sample_loss(out, x0, noise) : ddpm->per_sample_loss(out, x0, noise, t);
  }
};

struct Batch {
  at::Tensor x0, t, noise, labels;
};

// The batch of step `step`: x0 stands in for the loader's latents (ATen normals, as on the
// Python side); t, noise and label dropout come from the keyed generator as in
// ldm_trainer.cpp's prepare() (--rng=keyed) or from ATen's generator (--rng=aten).
Batch make_batch(const Args& a, const Objective& objective, int64_t step) {
  const int64_t n = a.i("batch"), size = a.i("size"), classes = a.i("num_classes");
  const uint64_t seed = static_cast<uint64_t>(a.i("seed"));
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  Batch b;
  b.x0 = at::randn({n, 4, size, size});
  at::Tensor labels = classes > 0 ? at::randint(0, classes, {n}, at::kLong) : at::Tensor();
  if (a.s("rng") == "keyed") {
    at::Tensor idx = at::arange(step * n, (step + 1) * n, at::kLong);
    b.t = objective.flow ? objective.flow->sample_time(seed, 0, idx, f32)
                         : core::keyed_randint(seed, core::stream_id(core::Stream::kTimestep), 0, idx, 0,
                                               objective.ddpm->timesteps());
    b.noise = core::keyed_normal(seed, core::stream_id(core::Stream::kNoise), 0, idx, {4, size, size},
                                 at::TensorOptions().dtype(at::kFloat));
    if (labels.defined() && a.d("label_dropout") > 0) {
      at::Tensor drop = core::keyed_bernoulli(seed, core::stream_id(core::Stream::kLabelDrop), 0, idx,
                                              a.d("label_dropout"));
      labels = at::where(drop, at::full_like(labels, classes), labels);
    }
  } else if (a.s("rng") == "aten") {
    b.t = objective.flow ? at::rand({n}) : at::randint(0, objective.ddpm->timesteps(), {n}, at::kLong);
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
  std::shared_ptr<core::DenoiserModule> model;
  Objective objective;
  std::vector<at::Tensor> params;
  std::unique_ptr<core::AdamW> optimizer;
  std::unique_ptr<core::EMA> ema;
  double grad_clip = 1.0, lr = 1e-3, ema_decay = 0.999;
  bool set_to_none = false;
  core::AdamW::Named named;

  explicit Trainer(const Args& a) : model(core::make_denoiser(model_options(a))), objective(a) {
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
    at::Tensor out = model->forward(objective.x_t(b.x0, b.t, b.noise), objective.model_time(b.t), b.labels);
    at::Tensor loss = objective.per_sample_loss(out, b.x0, b.noise, b.t).sum() / static_cast<double>(b.x0.size(0));
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
  Batch b = make_batch(a, tr.objective, 0);
  const at::Tensor t_model = tr.objective.model_time(b.t);
  core::TensorMap io = {{"x0", b.x0}, {"t", b.t}, {"t_model", t_model}, {"noise", b.noise}};
  if (b.labels.defined()) io["labels"] = b.labels;
  {  // eval-mode output on x0 itself: the plain forward comparison
    torch::NoGradGuard ng;
    tr.model->eval();
    io["out_eval"] = tr.model->forward(b.x0, t_model, b.labels);
    tr.model->train();
  }
  at::Tensor xt = tr.objective.x_t(b.x0, b.t, b.noise);
  io["x_t"] = xt;
  // Gradients of the step (before clipping), then the parameters and EMA after it.
  at::Tensor out = tr.model->forward(xt, t_model, b.labels);
  at::Tensor loss = tr.objective.per_sample_loss(out, b.x0, b.noise, b.t).sum() / static_cast<double>(b.x0.size(0));
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

// One step under LibTorch's (legacy) CPU profiler; prints each op's self time (its time minus
// that of the ops it called), summed over the step, the largest first.
void profile(const Args& a) {
  namespace prof = torch::autograd::profiler;
  Trainer tr(a);
  for (int64_t s = 0; s < std::max<int64_t>(1, a.i("warmup")); ++s) tr.step(make_batch(a, tr.objective, s));
  Batch b = make_batch(a, tr.objective, 100);
  prof::enableProfilerLegacy(torch::profiler::impl::ProfilerConfig(torch::profiler::impl::ProfilerState::CPU));
  tr.step(b);
  const prof::thread_event_lists lists = prof::disableProfilerLegacy();
  std::map<std::string, std::pair<double, int64_t>> self_us;  // name -> (self us, calls)
  double total = 0;
  for (const auto& events : lists) {
    struct Open {
      const prof::LegacyEvent* push;
      double children_us;
    };
    std::vector<Open> stack;
    for (const auto& e : events) {
      if (e.kind() == prof::EventKind::PushRange) {
        stack.push_back({&e, 0.0});
      } else if (e.kind() == prof::EventKind::PopRange && !stack.empty()) {
        const Open o = stack.back();
        stack.pop_back();
        const double us = o.push->cpuElapsedUs(e);
        auto& slot = self_us[o.push->name()];
        slot.first += us - o.children_us;
        slot.second += 1;
        if (stack.empty()) total += us;
        else stack.back().children_us += us;
      }
    }
  }
  std::vector<std::pair<std::string, std::pair<double, int64_t>>> rows(self_us.begin(), self_us.end());
  std::sort(rows.begin(), rows.end(), [](const auto& x, const auto& y) { return x.second.first > y.second.first; });
  std::printf("%-48s %12s %8s %8s\n", "op (self CPU time, one step)", "self ms", "share", "calls");
  for (size_t i = 0; i < std::min<size_t>(rows.size(), 25); ++i)
    std::printf("%-48s %12.3f %7.2f%% %8lld\n", rows[i].first.c_str(), rows[i].second.first / 1e3,
                100.0 * rows[i].second.first / std::max(total, 1e-9), static_cast<long long>(rows[i].second.second));
  std::printf("self CPU time total: %.3f ms\n", total / 1e3);
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
    if (a.i("profile")) {
      profile(a);
      return 0;
    }
    Trainer tr(a);
    const int64_t warmup = a.i("warmup"), steps = a.i("steps");
    std::map<std::string, std::vector<double>> phases;
    for (int64_t s = 0; s < warmup + steps; ++s) {
      auto t0 = Clock::now();
      Batch b = make_batch(a, tr.objective, s);
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
