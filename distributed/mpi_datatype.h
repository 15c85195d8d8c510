// Maps torch dtypes and ReduceOps to MPI. MPI has no 16-bit floats: f16 and bf16 travel as a
// 2-byte contiguous type with user-defined sum/max/min operations that compute in float.
#pragma once
#include "distributed/mpi_include.h"
#include <torch/torch.h>

#include "distributed/communicator.h"

namespace lf::dist {

struct MPIReduction {
  MPI_Datatype type;
  MPI_Op op;
};

// The datatype and operation that reduce `dtype` with `op`. Throws std::invalid_argument for
// dtypes without a reduction (complex, bool with sum). Requires MPI to be initialised (the
// f16/bf16 types and ops are created on first use).
MPIReduction mpi_reduction(torch::ScalarType dtype, ReduceOp op);

}  // namespace lf::dist
