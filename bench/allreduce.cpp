// Gradient sync benchmark, run by hand: mpirun -np 2 build/bench/bench_allreduce [options]
//  1. bandwidth: the Reducer syncing a model-sized set of f32 gradients at several bucket
//     sizes, against one raw MPI_Allreduce of the same bytes in the same run (goal >= 90%);
//  2. overlap: an MLP's forward + backward + sync, with the Reducer's overlap on and off: the
//     share of step time spent waiting on sync after backward ends.
// Options: --params=N (4194304) --repeats=R (11) --buckets=MB,MB,... (1,4,25,64)
//          --batch=B (64) --threads=T (torch threads per rank, 1) --poll-us=U (max sleep
//          between MPI_Test calls, 200) --spins=S (tests before sleeping, 64)
// Every variant has its own parameters and Reducer, and each round runs all of them (in an
// order rotated per round), so a noisy moment on a shared machine hits every variant alike.
// Medians over rounds (the first is a warm-up); rank 0 prints the tables.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/util/strings.h"
#include "distributed/abort.h"
#include "distributed/check.h"
#include "distributed/logging.h"
#include "distributed/mpi_communicator.h"
#include "distributed/mpi_runtime.h"
#include "distributed/reducer.h"

namespace {

using lf::dist::Clock;
using lf::dist::Communicator;
using lf::dist::Reducer;
using lf::dist::ReducerOptions;

struct Options {
  int64_t params = 4 << 20;
  int repeats = 11;
  std::vector<double> buckets_mb{1, 4, 25, 64};
  int64_t batch = 64;
  int threads = 1;
  int poll_us = 200;
  int spins = 64;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto eq = arg.find('=');
    const std::string key = arg.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : arg.substr(eq + 1);
    if (key == "--params") o.params = std::stoll(value);
    else if (key == "--repeats") o.repeats = std::stoi(value);
    else if (key == "--batch") o.batch = std::stoll(value);
    else if (key == "--threads") o.threads = std::stoi(value);
    else if (key == "--poll-us") o.poll_us = std::stoi(value);
    else if (key == "--spins") o.spins = std::stoi(value);
    else if (key == "--buckets") {
      o.buckets_mb.clear();
      for (const std::string& mb : lf::split(value, ',')) o.buckets_mb.push_back(std::stod(mb));
    } else {
      throw std::invalid_argument(lf::str("bench_allreduce: unknown option '", arg,
                                          "'; see the comment at the top of bench/allreduce.cpp"));
    }
  }
  if (o.repeats < 1 || o.params < 1024) throw std::invalid_argument("bench_allreduce: --repeats >= 1, --params >= 1024");
  return o;
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration_cast<lf::dist::Seconds>(Clock::now() - t).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Parameter shapes of a convnet-like model: many small tensors and a few large ones,
// `total` elements in all, in registration order.
std::vector<int64_t> model_like_sizes(int64_t total) {
  std::vector<int64_t> sizes;
  int64_t left = total;
  for (int64_t s : {64, 1728, 64, 36864, 128, 73728, 128, 147456, 256, 294912, 256, 589824, 512,
                    1179648, 512, 2359296, 1000}) {
    if (left <= 0) break;
    sizes.push_back(std::min(s, left));
    left -= sizes.back();
  }
  if (left > 0) sizes.push_back(left);
  return sizes;
}

ReducerOptions reducer_options(const Options& o, double mb, bool overlap) {
  ReducerOptions ro;
  ro.bucket_mb = mb;
  ro.overlap = overlap;
  ro.poll.max_sleep = std::chrono::microseconds(o.poll_us);
  ro.poll.spins = o.spins;
  return ro;
}

// Zeroes in place, as a training loop must: param.grad() are the Reducer's bucket views.
void zero_grads(const std::vector<torch::Tensor>& params) {
  for (const auto& p : params)
    if (p.grad().defined()) p.grad().zero_();
}

// 1. Bucketed sync vs one raw MPI_Allreduce of the same bytes.
void bench_bandwidth(Communicator& comm, MPI_Comm raw, const Options& o) {
  struct Variant {
    std::string name;
    std::vector<torch::Tensor> params;
    std::unique_ptr<Reducer> reducer;
    std::vector<double> with_sync, without_sync, finish;
  };
  std::vector<Variant> variants;
  auto add = [&](double mb, bool overlap, lf::dist::GradReduction reduction) {
    Variant v;
    v.name = lf::str("reducer ", mb, " MB, ", overlap ? "overlap" : "no overlap",
                     reduction == lf::dist::GradReduction::kSum ? ", sum" : "");
    for (int64_t n : model_like_sizes(o.params)) v.params.push_back(torch::zeros({n}).requires_grad_());
    ReducerOptions ro = reducer_options(o, mb, overlap);
    ro.reduction = reduction;
    ro.broadcast_from_rank0 = false;
    v.reducer = std::make_unique<Reducer>(v.params, std::vector<torch::Tensor>{}, comm, ro);
    variants.push_back(std::move(v));
  };
  for (const bool overlap : {false, true})
    for (double mb : o.buckets_mb) add(mb, overlap, lf::dist::GradReduction::kAverage);
  for (double mb : o.buckets_mb) add(mb, true, lf::dist::GradReduction::kSum);

  const double bytes = double(o.params) * 4;
  torch::Tensor flat = torch::ones({o.params});
  lf::dist::PollPolicy poll;
  poll.max_sleep = std::chrono::microseconds(o.poll_us);
  poll.spins = o.spins;
  comm.set_poll_policy(poll);
  std::vector<double> raw_times, nonblocking_times;
  for (int round = 0; round < o.repeats + 1; ++round) {
    const bool keep = round > 0;  // the first round warms up
    LF_MPI_CHECK(MPI_Barrier(raw));
    auto t0 = Clock::now();
    LF_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, flat.data_ptr(), int(o.params), MPI_FLOAT, MPI_SUM, raw));
    if (keep) raw_times.push_back(seconds_since(t0));
    // The non-blocking form the Reducer uses, polled with the same backoff: separates the cost
    // of Open MPI's libnbc + polling from the Reducer's own.
    LF_MPI_CHECK(MPI_Barrier(raw));
    t0 = Clock::now();
    comm.all_reduce_async(flat, lf::dist::ReduceOp::kSum, "raw")->wait();
    if (keep) nonblocking_times.push_back(seconds_since(t0));
    for (size_t k = 0; k < variants.size(); ++k) {
      Variant& v = variants[(k + static_cast<size_t>(round)) % variants.size()];
      // Time of backward + finish_backward with sync, minus the same without sync (the hooks
      // only count): what the sync adds, all of the Reducer's own passes over memory included.
      for (const bool sync : {true, false}) {
        v.reducer->set_sync(sync);
        zero_grads(v.params);
        // A backward whose gradients are free (d(sum p)/dp = 1).
        torch::Tensor loss = torch::zeros({});
        for (auto& p : v.params) loss = loss + p.sum();
        LF_MPI_CHECK(MPI_Barrier(raw));
        t0 = Clock::now();
        loss.backward();
        v.reducer->finish_backward();
        if (!keep) continue;
        (sync ? v.with_sync : v.without_sync).push_back(seconds_since(t0));
        if (sync) v.finish.push_back(v.reducer->stats().last_wait_s);
      }
    }
  }
  const double raw_s = median(raw_times);
  if (comm.rank() != 0) return;
  std::printf("\n1. Gradient sync bandwidth: %lld f32 gradients (%s) in %zu tensors, %d ranks, "
              "median of %d rounds\n", (long long)o.params, lf::human_bytes(bytes).c_str(),
              variants[0].params.size(), comm.world_size(), o.repeats);
  std::printf("reducer rows: time that syncing adds to backward + finish_backward (with sync minus "
              "without); with overlap part of it hides behind backward\n");
  // "vs raw": raw MPI_Allreduce time / this time (the goal is >= 90%). "vs nonblocking": the
  // same against MPI_Iallreduce + poll, the primitive the Reducer is built on. "finish ms":
  // median time in finish_backward() alone (without overlap, all of the sync but the hooks).
  const double nb = median(nonblocking_times);
  std::printf("%-34s %8s %10s %12s %10s %14s %10s\n", "method", "buckets", "time ms",
              "algbw GB/s", "vs raw", "vs nonblocking", "finish ms");
  auto row = [&](const std::string& name, size_t buckets, double t, double finish) {
    std::printf("%-34s %8zu %10.2f %12.3f %9.1f%% %13.1f%% %10.2f\n", name.c_str(), buckets,
                t * 1e3, bytes / t / 1e9, 100.0 * raw_s / t, 100.0 * nb / t, finish * 1e3);
  };
  row("raw MPI_Allreduce (1 call)", 1, raw_s, raw_s);
  row("MPI_Iallreduce + poll", 1, nb, nb);
  for (const Variant& v : variants)
    row(v.name, v.reducer->plan().buckets.size(), median(v.with_sync) - median(v.without_sync),
        median(v.finish));
}

// 2. Overlap: an MLP's step with the sync overlapped with backward or after it.
void bench_overlap(Communicator& comm, MPI_Comm raw, const Options& o) {
  const int64_t width = 512;
  const int64_t layers = std::max<int64_t>(1, o.params / (width * width + width));
  if (comm.rank() == 0)
    std::printf("\n2. Overlap: MLP %lld x Linear(%lld, %lld) = %s of f32 gradients, batch %lld per "
                "rank, %d torch thread(s) per rank, median of %d rounds\n", (long long)layers,
                (long long)width, (long long)width,
                lf::human_bytes(double(layers * (width * width + width)) * 4).c_str(),
                (long long)o.batch, o.threads, o.repeats);
  struct Variant {
    std::string name;
    torch::nn::Sequential model;
    std::unique_ptr<Reducer> reducer;
    std::vector<double> steps, backwards, waits;
  };
  std::vector<Variant> variants;
  for (double mb : {4.0, 25.0}) {
    for (const bool overlap : {false, true}) {
      Variant v;
      v.name = lf::str(mb, " MB, overlap ", overlap ? "on" : "off");
      torch::manual_seed(0);
      for (int64_t l = 0; l < layers; ++l) {
        v.model->push_back(torch::nn::Linear(width, width));
        v.model->push_back(torch::nn::Tanh());
      }
      v.reducer = std::make_unique<Reducer>(v.model->parameters(), std::vector<torch::Tensor>{},
                                            comm, reducer_options(o, mb, overlap));
      variants.push_back(std::move(v));
    }
  }
  torch::Tensor x = torch::randn({o.batch, width});
  for (int round = 0; round < o.repeats + 1; ++round) {
    for (size_t k = 0; k < variants.size(); ++k) {
      Variant& v = variants[(k + static_cast<size_t>(round)) % variants.size()];
      zero_grads(v.model->parameters());
      LF_MPI_CHECK(MPI_Barrier(raw));
      const auto t0 = Clock::now();
      torch::Tensor loss = v.model->forward(x).square().mean();
      loss.backward();
      const double backward_done = seconds_since(t0);
      v.reducer->finish_backward();
      const double step = seconds_since(t0);
      if (round == 0) continue;
      v.steps.push_back(step);
      v.backwards.push_back(backward_done);
      v.waits.push_back(step - backward_done);
    }
  }
  if (comm.rank() != 0) return;
  std::printf("%-22s %8s %10s %12s %12s %12s\n", "mode", "buckets", "step ms", "backward ms",
              "sync wait ms", "wait share");
  for (const Variant& v : variants) {
    const double s = median(v.steps), w = median(v.waits);
    std::printf("%-22s %8zu %10.2f %12.2f %12.2f %11.1f%%\n", v.name.c_str(),
                v.reducer->plan().buckets.size(), s * 1e3, median(v.backwards) * 1e3, w * 1e3,
                100.0 * w / s);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::unique_ptr<lf::dist::MPIRuntime> mpi;
  try {
    mpi = std::make_unique<lf::dist::MPIRuntime>(&argc, &argv, lf::dist::ThreadLevel::kMultiple);
    lf::dist::init_rank_logging(argv[0]);
    const Options o = parse(argc, argv);
    torch::set_num_threads(o.threads);
    auto comm = lf::dist::MPICommunicator::world();
    auto raw = lf::dist::MPICommunicator::world();
    bench_bandwidth(*comm, raw->handle(), o);
    bench_overlap(*comm, raw->handle(), o);
    std::fflush(stdout);
    LF_MPI_CHECK(MPI_Barrier(raw->handle()));
  } catch (const std::exception& e) {
    lf::dist::abort_job(e.what());
  }
  return 0;
}
