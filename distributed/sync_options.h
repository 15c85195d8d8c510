// The choices of gradient sync across ranks: the all-reduce algorithm (flat over all ranks, or
// hierarchical: within each host, then between hosts) and the format gradients travel in.
#pragma once
#include <string>

#include "core/util/enum_table.h"
#include "distributed/host_groups.h"

namespace lf::dist {

enum class AllReduceAlgorithm {
  kAuto,          // hierarchical when there are several hosts and a host runs several ranks
  kFlat,          // one all-reduce over all ranks (MPI's or NCCL's own algorithm)
  kHierarchical,  // reduce-scatter within each host, then between hosts; all-gather back
};

enum class GradWire {
  kF32,   // the gradients' own dtype (f32, or f64 in f64 training)
  kBF16,  // bfloat16 on the wire, sums accumulated in f32 (f64 in f64 training)
};

const EnumTable<AllReduceAlgorithm>& allreduce_algorithms();  // "auto", "flat", "hierarchical"
const EnumTable<GradWire>& grad_wires();                       // "f32", "bf16"
std::string to_string(AllReduceAlgorithm algorithm);
std::string to_string(GradWire wire);

// The algorithm to run on `topology`: kAuto becomes kHierarchical when there is more than one
// host, a host runs more than one rank and every host runs the same number, else kFlat.
// kHierarchical on hosts with different rank counts throws std::invalid_argument naming the
// layout (the two-level scheme pairs local rank l of every host).
AllReduceAlgorithm resolve_algorithm(AllReduceAlgorithm requested, const HostTopology& topology);

}  // namespace lf::dist
