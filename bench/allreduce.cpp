// Gradient sync benchmark, run by hand: mpirun -np 2 build/bench/bench_allreduce [options]
//  1. bandwidth: the Reducer syncing a model-sized set of f32 gradients at several bucket
//     sizes, against one raw MPI_Allreduce of the same bytes in the same run (goal >= 90%);
//  2. overlap: an MLP's forward + backward + sync, with the Reducer's overlap on and off: the
//     share of step time spent waiting on sync after backward ends.
// Options: --params=N (4194304) --repeats=R (7) --buckets=MB,MB,... (1,4,16,25,64)
//          --batch=B (64) --threads=T (torch threads per rank, 1) --poll-us=U (max sleep
//          between MPI_Test calls, 200) --spins=S (tests before sleeping, 64)
// Medians over repeats; rank 0 prints the tables (see docs/benchmarks.md when written).
#include <cstdio>
#include <cstring>
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
  int repeats = 7;
  std::vector<double> buckets_mb{1, 4, 16, 25, 64};
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

// 1. Bucketed sync vs one raw MPI_Allreduce of the same bytes.
void bench_bandwidth(Communicator& comm, MPI_Comm raw, const Options& o) {
  std::vector<torch::Tensor> params;
  for (int64_t n : model_like_sizes(o.params)) params.push_back(torch::zeros({n}).requires_grad_());
  const double bytes = double(o.params) * 4;
  torch::Tensor flat = torch::ones({o.params});
  std::vector<double> raw_times;
  for (int rep = 0; rep < o.repeats + 1; ++rep) {
    LF_MPI_CHECK(MPI_Barrier(raw));
    const auto t0 = Clock::now();
    LF_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, flat.data_ptr(), int(o.params), MPI_FLOAT, MPI_SUM, raw));
    if (rep > 0) raw_times.push_back(seconds_since(t0));  // the first run warms up
  }
  const double raw_s = median(raw_times);
  if (comm.rank() == 0) {
    std::printf("\n1. Gradient sync bandwidth: %lld f32 gradients (%s) in %zu tensors, %d ranks, "
                "median of %d\n", (long long)o.params, lf::human_bytes(bytes).c_str(), params.size(),
                comm.world_size(), o.repeats);
    std::printf("reducer rows: time that syncing adds to backward + finish_backward (with sync minus "
                "without); with overlap part of it hides behind backward\n");
    std::printf("%-28s %8s %10s %12s %10s\n", "method", "buckets", "time ms", "algbw GB/s", "vs raw");
    std::printf("%-28s %8d %10.2f %12.3f %9.1f%%\n", "raw MPI_Allreduce (1 call)", 1, raw_s * 1e3,
                bytes / raw_s / 1e9, 100.0);
  }
  {
    // The non-blocking form the Reducer uses, polled with the same backoff: separates the cost
    // of Open MPI's libnbc + polling from the Reducer's own.
    lf::dist::PollPolicy poll;
    poll.max_sleep = std::chrono::microseconds(o.poll_us);
    poll.spins = o.spins;
    comm.set_poll_policy(poll);
    std::vector<double> times;
    for (int rep = 0; rep < o.repeats + 1; ++rep) {
      LF_MPI_CHECK(MPI_Barrier(raw));
      const auto t0 = Clock::now();
      comm.all_reduce_async(flat, lf::dist::ReduceOp::kSum, "raw")->wait();
      if (rep > 0) times.push_back(seconds_since(t0));
    }
    const double t = median(times);
    if (comm.rank() == 0)
      std::printf("%-28s %8d %10.2f %12.3f %9.1f%%\n", "MPI_Iallreduce + poll", 1, t * 1e3,
                  bytes / t / 1e9, 100.0 * raw_s / t);
  }
  for (const bool overlap : {false, true}) {
    for (double mb : o.buckets_mb) {
      ReducerOptions ro;
      ro.bucket_mb = mb;
      ro.overlap = overlap;
      ro.poll.max_sleep = std::chrono::microseconds(o.poll_us);
      ro.poll.spins = o.spins;
      ro.broadcast_from_rank0 = false;
      Reducer reducer(params, {}, comm, ro);
      // Time of backward + finish_backward with sync, minus the same without sync (hooks return
      // at once): what the sync adds, including copies into and out of the buckets.
      std::vector<double> with_sync, without_sync;
      for (int rep = 0; rep < 2 * (o.repeats + 1); ++rep) {
        const bool sync = rep % 2 == 0;
        reducer.set_sync(sync);
        for (auto& p : params) p.mutable_grad() = torch::Tensor();
        // A backward whose gradients are free (d(sum p)/dp = 1).
        torch::Tensor loss = torch::zeros({});
        for (auto& p : params) loss = loss + p.sum();
        LF_MPI_CHECK(MPI_Barrier(raw));
        const auto t0 = Clock::now();
        loss.backward();
        reducer.finish_backward();
        if (rep >= 2) (sync ? with_sync : without_sync).push_back(seconds_since(t0));
      }
      const double t = median(with_sync) - median(without_sync);
      if (comm.rank() == 0)
        std::printf("%-28s %8zu %10.2f %12.3f %9.1f%%\n",
                    lf::str("reducer ", mb, " MB, overlap ", overlap ? "on" : "off").c_str(),
                    reducer.plan().buckets.size(), t * 1e3, bytes / t / 1e9, 100.0 * raw_s / t);
    }
  }
}

// 2. Overlap: an MLP's step with the sync overlapped with backward or after it.
void bench_overlap(Communicator& comm, MPI_Comm raw, const Options& o) {
  const int64_t width = 512;
  const int64_t layers = std::max<int64_t>(1, o.params / (width * width + width));
  if (comm.rank() == 0)
    std::printf("\n2. Overlap: MLP %lld x Linear(%lld, %lld) = %s of f32 gradients, batch %lld per "
                "rank, %d torch thread(s) per rank, median of %d\n", (long long)layers,
                (long long)width, (long long)width,
                lf::human_bytes(double(layers * (width * width + width)) * 4).c_str(),
                (long long)o.batch, o.threads, o.repeats);
  if (comm.rank() == 0)
    std::printf("%-22s %8s %10s %12s %12s %12s\n", "mode", "buckets", "step ms", "backward ms",
                "sync wait ms", "wait share");
  for (double mb : {4.0, 25.0}) {
    for (const bool overlap : {false, true}) {
      torch::manual_seed(0);
      torch::nn::Sequential model;
      for (int64_t l = 0; l < layers; ++l) {
        model->push_back(torch::nn::Linear(width, width));
        model->push_back(torch::nn::Tanh());
      }
      ReducerOptions ro;
      ro.bucket_mb = mb;
      ro.overlap = overlap;
      ro.poll.max_sleep = std::chrono::microseconds(o.poll_us);
      ro.poll.spins = o.spins;
      Reducer reducer(model->parameters(), {}, comm, ro);
      torch::Tensor x = torch::randn({o.batch, width});
      std::vector<double> steps, backwards, waits;
      for (int rep = 0; rep < o.repeats + 1; ++rep) {
        for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
        LF_MPI_CHECK(MPI_Barrier(raw));
        const auto t0 = Clock::now();
        torch::Tensor loss = model->forward(x).square().mean();
        loss.backward();
        const double backward_done = seconds_since(t0);
        reducer.finish_backward();
        const double step = seconds_since(t0);
        if (rep == 0) continue;
        steps.push_back(step);
        backwards.push_back(backward_done);
        waits.push_back(step - backward_done);
      }
      const double s = median(steps), w = median(waits);
      if (comm.rank() == 0)
        std::printf("%-22s %8zu %10.2f %12.2f %12.2f %11.1f%%\n",
                    lf::str(mb, " MB, overlap ", overlap ? "on" : "off").c_str(),
                    reducer.plan().buckets.size(), s * 1e3, median(backwards) * 1e3, w * 1e3,
                    100.0 * w / s);
    }
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
