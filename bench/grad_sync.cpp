// Gradient sync across hosts, run by bench/grad_sync.sh on the test cluster (2 hosts x 2 ranks)
// under mpirun: the step time of a UNet training step (forward, eps-MSE, backward, the
// Reducer's sync, grad norm, AdamW, as launch/train_loop.cpp on 2^k ranks) for each variant
// of {flat, hierarchical} x {f32, bf16 wire} x {overlap on, off}, with the share of the step
// spent waiting for the sync after backward, and the bytes each host sent on its network
// interface per step (from /proc/net/dev of the host's network namespace: eth0 on the test
// cluster).
//   mpirun ... bench_grad_sync [--key=value ...]   (--help lists the keys)
// Every variant runs in every round (the order rotated per round, and by --rotate) on the same
// model and batch, so a noisy moment on the shared machine hits all alike; each round of a
// variant is one warm-up step and `steps` timed steps (median), and the table shows medians
// over rounds.
// Rank 0 prints a table and, with --json=FILE, writes one JSON object per variant.
#include <ATen/ATen.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/adamw.h"
#include "core/diffusion.h"
#include "core/state_dict.h"
#include "core/unet.h"
#include "core/util/strings.h"
#include "distributed/abort.h"
#include "distributed/logging.h"
#include "distributed/mpi_communicator.h"
#include "distributed/mpi_runtime.h"
#include "distributed/reducer.h"

namespace {

namespace core = lf::core;
namespace dist = lf::dist;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point a) { return std::chrono::duration<double, std::milli>(Clock::now() - a).count(); }

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Args {
  std::map<std::string, std::string> v = {
      {"batch", "128"},         {"steps", "3"},          {"rounds", "3"},         {"threads", "1"},
      {"channels", "64"},       {"channel_mult", "1,2,2"}, {"num_res_blocks", "1"}, {"attention_ds", "2,4"},
      {"head_channels", "32"},  {"size", "8"},           {"bucket_mb", "25"},     {"variants", "all"},
      {"interface", "eth0"},    {"json", ""},            {"label", ""},           {"rotate", "0"}};

  void parse(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        std::printf("bench_grad_sync options (--key=value); variants: all, or a comma list of "
                    "ALGO-WIRE-OVERLAP such as hierarchical-bf16-on:\n");
        for (auto& [k, d] : v) std::printf("  --%s (default '%s')\n", k.c_str(), d.c_str());
        std::exit(0);
      }
      const auto eq = a.find('=');
      if (a.rfind("--", 0) != 0 || eq == std::string::npos)
        throw std::invalid_argument(lf::str("bench_grad_sync: argument '", a, "' is not --key=value"));
      const std::string key = a.substr(2, eq - 2);
      if (!v.count(key)) throw std::invalid_argument(lf::str("bench_grad_sync: unknown option --", key, " (see --help)"));
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

struct Variant {
  dist::AllReduceAlgorithm algorithm;
  dist::GradWire wire;
  bool overlap;
  std::string name() const {
    return lf::str(dist::to_string(algorithm), "-", dist::to_string(wire), "-", overlap ? "on" : "off");
  }
};

std::vector<Variant> variants_of(const std::string& spec) {
  std::vector<Variant> all;
  for (auto a : {dist::AllReduceAlgorithm::kFlat, dist::AllReduceAlgorithm::kHierarchical})
    for (auto w : {dist::GradWire::kF32, dist::GradWire::kBF16})
      for (bool o : {true, false}) all.push_back({a, w, o});
  if (spec == "all") return all;
  std::vector<Variant> chosen;
  for (const std::string& name : lf::split(spec, ',')) {
    auto it = std::find_if(all.begin(), all.end(), [&](const Variant& v) { return v.name() == lf::trim(name); });
    if (it == all.end()) throw std::invalid_argument(lf::str("bench_grad_sync: unknown variant '", name, "'"));
    chosen.push_back(*it);
  }
  return chosen;
}

// Bytes sent so far on `interface` of this network namespace (/proc/net/dev, 9th number);
// -1 when there is no such interface.
int64_t tx_bytes(const std::string& interface) {
  std::ifstream in("/proc/net/dev");
  std::string line;
  while (std::getline(in, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos || lf::trim(line.substr(0, colon)) != interface) continue;
    std::istringstream fields(line.substr(colon + 1));
    int64_t x = 0;
    for (int k = 0; k < 9; ++k) fields >> x;
    return x;
  }
  return -1;
}

struct Timing {
  std::vector<double> step, compute, wait, bytes;  // per round: medians (ms), bytes per step
};

class Bench {
 public:
  Bench(const Args& a, dist::Communicator& comm) : a_(a), comm_(comm), model_(options(a)) {
    for (auto& item : model_->named_parameters()) {
      named_.emplace_back(item.key(), item.value());
      params_.push_back(item.value());
    }
    optimizer_ = std::make_unique<core::AdamW>(named_, core::AdamWOptions{1e-4, 0.9, 0.999, 1e-8, 0.0});
    const int64_t per_rank = a.i("batch") / comm.world_size();
    torch::manual_seed(1000 + comm.rank());
    x0_ = torch::randn({per_rank, 4, a.i("size"), a.i("size")});
    noise_ = torch::randn_like(x0_);
    t_ = torch::randint(0, diffusion_.timesteps(), {per_rank}, torch::kLong);
    labels_ = torch::randint(0, 10, {per_rank}, torch::kLong);
    model_->train();
  }

  int64_t parameters() const { return core::count_parameters(*model_); }

  // One round of `variant`: a warm-up step, then the timed steps; adds the round's medians.
  void round(const Variant& variant, Timing& timing) {
    dist::ReducerOptions ro;
    ro.bucket_mb = a_.d("bucket_mb");
    ro.overlap = variant.overlap;
    ro.reduction = dist::GradReduction::kSum;  // the trainer's choice on 2^k ranks
    ro.algorithm = variant.algorithm;
    ro.wire = variant.wire;
    ro.broadcast_from_rank0 = false;  // timing only: the weights need not agree
    ro.timeout_s = 600;
    dist::Reducer reducer(params_, {}, comm_, ro);
    const double scale = 1.0 / comm_.world_size();
    step(reducer, scale);
    std::vector<double> step_ms, compute_ms, wait_ms;
    comm_.barrier("barrier before the timed steps");
    const int64_t tx0 = tx_bytes(a_.s("interface"));
    for (int64_t s = 0; s < a_.i("steps"); ++s) {
      const auto [total, compute, wait] = step(reducer, scale);
      step_ms.push_back(total);
      compute_ms.push_back(compute);
      wait_ms.push_back(wait);
    }
    comm_.barrier("barrier after the timed steps");
    const int64_t tx1 = tx_bytes(a_.s("interface"));
    timing.step.push_back(median(step_ms));
    timing.compute.push_back(median(compute_ms));
    timing.wait.push_back(median(wait_ms));
    timing.bytes.push_back(tx0 < 0 ? -1.0 : static_cast<double>(tx1 - tx0) / static_cast<double>(a_.i("steps")));
  }

 private:
  static core::UNetOptions options(const Args& a) {
    core::UNetOptions o;
    o.model_channels = a.i("channels");
    o.channel_mult = a.list("channel_mult");
    o.num_res_blocks = a.i("num_res_blocks");
    o.attention_ds = a.list("attention_ds");
    o.head_channels = a.i("head_channels");
    o.num_classes = 10;
    return o;
  }

  // forward + backward (compute), finish_backward (wait), norm + AdamW; ms.
  std::tuple<double, double, double> step(dist::Reducer& reducer, double scale) {
    const auto t0 = Clock::now();
    at::Tensor out = model_->forward(diffusion_.q_sample(x0_, t_, noise_), t_, labels_);
    at::Tensor loss = diffusion_.per_sample_loss(out, x0_, noise_, t_).mean();
    loss.backward();
    const double compute = ms_since(t0);
    const auto t1 = Clock::now();
    reducer.finish_backward();
    const double wait = ms_since(t1);
    const double norm = core::global_grad_norm(params_) * scale;
    core::clip_grad_norm(params_, 1.0, norm);
    optimizer_->step(1e-4, scale);
    for (auto& p : params_) p.mutable_grad().zero_();
    return {ms_since(t0), compute, wait};
  }

  const Args& a_;
  dist::Communicator& comm_;
  core::UNet model_;
  core::Diffusion diffusion_{core::DiffusionOptions{}};
  std::vector<at::Tensor> params_;
  core::AdamW::Named named_;
  std::unique_ptr<core::AdamW> optimizer_;
  at::Tensor x0_, noise_, t_, labels_;
};

}  // namespace

int main(int argc, char** argv) {
  std::unique_ptr<dist::MPIRuntime> mpi;
  try {
    mpi = std::make_unique<dist::MPIRuntime>(&argc, &argv, dist::ThreadLevel::kMultiple);
    dist::init_rank_logging(argv[0]);
    Args a;
    a.parse(argc, argv);
    torch::set_num_threads(static_cast<int>(a.i("threads")));
    auto comm = dist::MPICommunicator::world();
    comm->set_timeout(dist::Seconds(600));
    Bench bench(a, *comm);
    const std::vector<Variant> variants = variants_of(a.s("variants"));
    std::vector<Timing> timing(variants.size());
    const int64_t rounds = a.i("rounds");
    for (int64_t r = 0; r < rounds; ++r) {
      for (size_t k = 0; k < variants.size(); ++k) {
        const size_t v = (k + static_cast<size_t>(r + a.i("rotate"))) % variants.size();
        bench.round(variants[v], timing[v]);
        if (comm->rank() == 0) {
          std::printf("round %lld %-24s step %8.1f ms, wait %7.1f ms, %.1f MB sent by host 1\n",
                      static_cast<long long>(r + 1), variants[v].name().c_str(), timing[v].step.back(),
                      timing[v].wait.back(), timing[v].bytes.back() / 1e6);
          std::fflush(stdout);
        }
      }
    }
    // Bytes per host: every host's local rank 0 measured its own interface; gather them.
    std::vector<std::vector<double>> host_bytes(variants.size());
    for (size_t v = 0; v < variants.size(); ++v) {
      torch::Tensor mine = torch::tensor({median(timing[v].bytes)}, torch::kDouble);
      host_bytes[v] = std::vector<double>(comm->world_size());
      torch::Tensor all = comm->all_gather(mine, "all_gather of the bytes per step");
      for (int r = 0; r < comm->world_size(); ++r) host_bytes[v][r] = all[r][0].item<double>();
    }
    if (comm->rank() == 0) {
      std::printf("\n%s: %lld parameters, global batch %lld, %d ranks, bucket %s MB, %lld rounds x %lld steps\n",
                  a.s("label").c_str(), static_cast<long long>(bench.parameters()),
                  static_cast<long long>(a.i("batch")), comm->world_size(), a.s("bucket_mb").c_str(),
                  static_cast<long long>(rounds), static_cast<long long>(a.i("steps")));
      std::printf("| variant | step ms | compute ms | wait ms | wait share | MB sent per step by rank 0's host |\n");
      std::printf("| --- | --- | --- | --- | --- | --- |\n");
      std::ofstream json;
      if (!a.s("json").empty()) json.open(a.s("json"), std::ios::app);
      for (size_t v = 0; v < variants.size(); ++v) {
        const double step = median(timing[v].step), wait = median(timing[v].wait);
        std::printf("| %s | %.1f | %.1f | %.1f | %.1f%% | %.2f |\n", variants[v].name().c_str(), step,
                    median(timing[v].compute), wait, 100.0 * wait / step, host_bytes[v][0] / 1e6);
        if (json.is_open()) {
          json << "{\"label\": \"" << a.s("label") << "\", \"variant\": \"" << variants[v].name()
               << "\", \"params\": " << bench.parameters() << ", \"batch\": " << a.i("batch")
               << ", \"ranks\": " << comm->world_size() << ", \"step_ms\": " << step
               << ", \"compute_ms\": " << median(timing[v].compute) << ", \"wait_ms\": " << wait
               << ", \"rounds_step_ms\": [";
          for (size_t i = 0; i < timing[v].step.size(); ++i) json << (i ? ", " : "") << timing[v].step[i];
          json << "], \"bytes_per_step_by_rank\": [";
          for (size_t i = 0; i < host_bytes[v].size(); ++i) json << (i ? ", " : "") << host_bytes[v][i];
          json << "]}\n";
        }
      }
    }
    std::fflush(stdout);
    comm->barrier("barrier at the end");
  } catch (const std::exception& e) {
    dist::abort_job(e.what());
  }
  return 0;
}
