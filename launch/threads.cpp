// Thread settings for torch and OpenBLAS (see threads.h).
#include "launch/threads.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

#include "distributed/rank_info.h"

namespace lf::launch {

namespace {

int cores_available() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace

int ranks_on_this_node() {
  // The launcher's count (distributed/rank_info.h: mpirun's local size, or Slurm's tasks on
  // this node of an uneven step like "2(x3),1"); inconsistent variables are reported later,
  // by the runtime, with the full message.
  try {
    return std::max(1, dist::discover_rank_info().local_size);
  } catch (const std::exception&) {
    return 1;
  }
}

int default_threads() {
  // Under a batch script (no step) the allocation's CPUs bound what we may use.
  int cores = cores_available();
  return std::max(1, cores / std::max(1, ranks_on_this_node()));
}

int openblas_threads() {
  using GetFn = int (*)();
  auto fn = reinterpret_cast<GetFn>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return fn ? fn() : -1;
}

int choose_threads(const std::string* flag, const char* omp_num_threads) {
  auto parse = [](const std::string& text, const std::string& what) {
    char* end = nullptr;
    long n = std::strtol(text.c_str(), &end, 10);
    if (text.empty() || !end || *end != '\0' || n < 1 || n > 1024)
      throw std::invalid_argument(what + " = '" + text + "': expected an integer in [1, 1024]");
    return static_cast<int>(n);
  };
  if (flag) return parse(*flag, "--threads");
  if (omp_num_threads && *omp_num_threads) return parse(omp_num_threads, "OMP_NUM_THREADS");
  return default_threads();
}

void set_threads(int n) {
  n = std::max(1, n);
  at::set_num_threads(n);
  using SetFn = void (*)(int);
  if (auto fn = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) fn(n);
  if (auto fn = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "goto_set_num_threads"))) fn(n);
}

}  // namespace lf::launch
