// Where the ranks of a job run: each rank's host, local rank, local size (from the launcher)
// and thread count, gathered once at start-up so that rank 0 can log the layout per host and
// warn when the launcher's local ranks do not match the host names (a wrong local rank means a
// wrong GPU and a wrong default thread count).
#pragma once
#include <string>
#include <vector>

#include "distributed/communicator.h"
#include "distributed/rank_info.h"

namespace lf::dist {

struct RankPlace {
  int rank = 0;
  std::string host;
  int local_rank = 0;
  int local_size = 1;
  int threads = 1;
};

// Collective (one all_gather): every rank's place, in rank order. `host` is this rank's host
// name (rank_context().host).
std::vector<RankPlace> gather_layout(Communicator& comm, const RankInfo& info, const std::string& host,
                                     int threads);

// "ranks on 2 hosts: h1 ranks 0-1 (local 0-1 of 2, 1 thread each); h2 rank 2 (local 0 of 1,
// 2 threads)". Hosts in order of their first rank.
std::string describe_layout(const std::vector<RankPlace>& places);

// One message per host whose launcher-given local ranks are not 0..n-1 for its n ranks, or
// whose local size is not n (same host name on two machines, or a launcher that miscounts).
std::vector<std::string> check_layout(const std::vector<RankPlace>& places);

// "3", "2-3", "0, 2, 5-7" for sorted ranks.
std::string format_rank_list(const std::vector<int>& ranks);

}  // namespace lf::dist
