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

namespace lf::launch {

namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  return (end && *end == '\0' && x > 0) ? static_cast<int>(x) : fallback;
}

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
  int n = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", 0);
  if (n > 0) return n;
  // SLURM_TASKS_PER_NODE looks like "2(x3),1"; the first count is this node's in the common case.
  if (const char* t = std::getenv("SLURM_STEP_TASKS_PER_NODE")) return std::max(1, std::atoi(t));
  if (const char* t = std::getenv("SLURM_TASKS_PER_NODE")) {
    if (std::getenv("SLURM_STEP_ID")) return std::max(1, std::atoi(t));
  }
  return 1;
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
