// The two levels of a multi-host job for hierarchical collectives: the ranks of each host
// (shared memory between them) and, across hosts, the ranks that have the same local rank.
// Rank (host h, local rank l) is rank l of its host's communicator and rank h of the
// communicator of local rank l; hosts are numbered by their lowest rank.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "distributed/communicator.h"

namespace lf::dist {

struct HostTopology {
  int hosts = 1;                    // number of hosts
  int host = 0;                     // this rank's host, numbered by the hosts' lowest ranks
  int local_rank = 0;               // this rank among its host's ranks (in rank order)
  int local_size = 1;               // ranks on this host
  std::vector<int> ranks_per_host;  // by host number
  std::vector<int> host_of_rank;    // by rank

  // Every host runs the same number of ranks (what the two-level scheme needs).
  bool uniform() const;
  // "2 hosts x 2 ranks", or "2 hosts (2, 1 ranks)" when not uniform.
  std::string describe() const;
};

class HostGroups {
 public:
  // Collective over `world` and blocking: groups its ranks by host (world.split_host(), the
  // shared-memory domain under MPI), numbers the hosts, and when every host has the same
  // number of ranks also makes the communicator of each local rank across hosts.
  explicit HostGroups(Communicator& world);

  const HostTopology& topology() const { return topology_; }
  // The ranks of this host.
  Communicator& intra() { return *intra_; }
  // The ranks with this local rank, one per host, ranked by host. Only when uniform()
  // (std::logic_error otherwise).
  Communicator& inter();

 private:
  HostTopology topology_;
  std::unique_ptr<Communicator> intra_;
  std::unique_ptr<Communicator> inter_;
};

}  // namespace lf::dist
