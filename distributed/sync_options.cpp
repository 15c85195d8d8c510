// Enum tables and the resolution of dist.allreduce = auto (see sync_options.h).
#include "distributed/sync_options.h"

#include <stdexcept>

#include "core/util/strings.h"

namespace lf::dist {

const EnumTable<AllReduceAlgorithm>& allreduce_algorithms() {
  static const EnumTable<AllReduceAlgorithm> table{{"auto", AllReduceAlgorithm::kAuto},
                                                   {"flat", AllReduceAlgorithm::kFlat},
                                                   {"hierarchical", AllReduceAlgorithm::kHierarchical}};
  return table;
}

const EnumTable<GradWire>& grad_wires() {
  static const EnumTable<GradWire> table{{"f32", GradWire::kF32}, {"bf16", GradWire::kBF16}};
  return table;
}

std::string to_string(AllReduceAlgorithm algorithm) { return allreduce_algorithms().name(algorithm); }
std::string to_string(GradWire wire) { return grad_wires().name(wire); }

AllReduceAlgorithm resolve_algorithm(AllReduceAlgorithm requested, const HostTopology& topology) {
  if (requested == AllReduceAlgorithm::kFlat) return requested;
  if (requested == AllReduceAlgorithm::kHierarchical) {
    if (!topology.uniform())
      throw std::invalid_argument(lf::str(
          "dist.allreduce = hierarchical needs the same number of ranks on every host, but the job runs on ",
          topology.describe(), "; start as many ranks on each host, or set dist.allreduce = flat or auto"));
    return requested;
  }
  const bool several_per_host = topology.local_size > 1;
  return topology.hosts > 1 && several_per_host && topology.uniform() ? AllReduceAlgorithm::kHierarchical
                                                                       : AllReduceAlgorithm::kFlat;
}

}  // namespace lf::dist
