// --threads: torch's intra-op threads and OpenBLAS's threads, set together (OpenBLAS ignores
// torch's setting), defaulting to the cores of this node divided by the ranks on it.
#pragma once

namespace lf::launch {

// Ranks launched on this node, from Open MPI or Slurm (1 when started alone).
int ranks_on_this_node();

// The default thread count: max(1, cores / ranks_on_this_node()).
int default_threads();

// Sets torch intra-op threads, one inter-op thread, and OpenBLAS threads to `n` (n >= 1).
void set_threads(int n);

// OpenBLAS's current thread count, or -1 when OpenBLAS is not loaded (for tests and logs).
int openblas_threads();

}  // namespace lf::launch
