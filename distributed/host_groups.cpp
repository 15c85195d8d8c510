// HostGroups: the host and cross-host communicators of a job (see host_groups.h).
#include "distributed/host_groups.h"

#include <algorithm>
#include <map>
#include <stdexcept>

#include "core/util/strings.h"

namespace lf::dist {

bool HostTopology::uniform() const {
  return std::all_of(ranks_per_host.begin(), ranks_per_host.end(),
                     [this](int n) { return n == ranks_per_host.front(); });
}

std::string HostTopology::describe() const {
  const std::string h = lf::str(hosts, hosts == 1 ? " host" : " hosts");
  if (uniform()) return lf::str(h, " x ", ranks_per_host.front(), ranks_per_host.front() == 1 ? " rank" : " ranks");
  std::vector<std::string> counts;
  for (int n : ranks_per_host) counts.push_back(std::to_string(n));
  return lf::str(h, " (", join(counts, ", "), " ranks)");
}

HostGroups::HostGroups(Communicator& world) {
  intra_ = world.split_host();
  // Each rank learns every rank's host leader (its host's lowest rank); numbering the
  // distinct leaders in rank order numbers the hosts the same way on every rank.
  torch::Tensor leader = torch::full({1}, static_cast<int64_t>(world.rank()), torch::kLong);
  intra_->all_reduce(leader, ReduceOp::kMin, "all_reduce (min) of the host leader's rank");
  const torch::Tensor leaders =
      world.all_gather(leader, "all_gather of the host leaders' ranks").view({-1});
  std::map<int64_t, int> host_of_leader;
  for (int r = 0; r < world.world_size(); ++r) {
    const int64_t l = leaders[r].item<int64_t>();
    if (!host_of_leader.count(l)) {
      const int next = static_cast<int>(host_of_leader.size());
      host_of_leader[l] = next;
    }
  }
  HostTopology& t = topology_;
  t.hosts = static_cast<int>(host_of_leader.size());
  t.ranks_per_host.assign(t.hosts, 0);
  for (int r = 0; r < world.world_size(); ++r) {
    const int h = host_of_leader.at(leaders[r].item<int64_t>());
    t.host_of_rank.push_back(h);
    ++t.ranks_per_host[h];
  }
  t.host = t.host_of_rank[world.rank()];
  t.local_rank = intra_->rank();
  t.local_size = intra_->world_size();
  if (t.local_size != t.ranks_per_host[t.host])
    throw std::runtime_error(lf::str(world.tag(), " host grouping: the shared-memory split has ", t.local_size,
                                     " ranks on this host, but ", t.ranks_per_host[t.host],
                                     " ranks name it as their host (a launcher or MPI problem)"));
  // Every rank knows the whole layout, so all take this branch together (split is collective).
  if (t.uniform()) inter_ = world.split(t.local_rank, t.host);
}

Communicator& HostGroups::inter() {
  if (!inter_)
    throw std::logic_error("HostGroups::inter(): hosts run different numbers of ranks (" +
                           topology_.describe() + "); there is no communicator per local rank");
  return *inter_;
}

}  // namespace lf::dist
