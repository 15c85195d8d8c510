// --threads: torch's intra-op threads and OpenBLAS's threads, set together (OpenBLAS ignores
// torch's setting), defaulting to the cores of this node divided by the ranks on it.
#pragma once
#include <string>

namespace lf::launch {

// Ranks launched on this node, from Open MPI or Slurm (1 when started alone).
int ranks_on_this_node();

// The default thread count: max(1, cores / ranks_on_this_node()).
int default_threads();

// The thread count to use: `flag` (--threads) when given, else `omp_num_threads` (the
// OMP_NUM_THREADS environment variable) when set and not empty, else default_threads(). Throws
// std::invalid_argument naming the flag or the variable for a value outside [1, 1024].
int choose_threads(const std::string* flag, const char* omp_num_threads);

// Sets torch intra-op threads, one inter-op thread, and OpenBLAS threads to `n` (n >= 1).
void set_threads(int n);

// OpenBLAS's current thread count, or -1 when OpenBLAS is not loaded (for tests and logs).
int openblas_threads();

}  // namespace lf::launch
