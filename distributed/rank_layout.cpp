// The job's layout over hosts (see rank_layout.h).
#include "distributed/rank_layout.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <sstream>

#include "core/util/strings.h"

namespace lf::dist {
namespace {

constexpr int64_t kHostBytes = 64;
constexpr int64_t kInts = 3;  // local rank, local size, threads

struct HostGroup {
  std::vector<int> ranks;
  std::vector<int> local_ranks;
  std::set<int> local_sizes;
  std::set<int> threads;
};

// Hosts in order of their first rank, with their ranks' places.
std::vector<std::pair<std::string, HostGroup>> by_host(const std::vector<RankPlace>& places) {
  std::vector<std::pair<std::string, HostGroup>> groups;
  std::map<std::string, size_t> index;
  for (const RankPlace& p : places) {
    auto it = index.find(p.host);
    if (it == index.end()) {
      it = index.emplace(p.host, groups.size()).first;
      groups.emplace_back(p.host, HostGroup{});
    }
    HostGroup& g = groups[it->second].second;
    g.ranks.push_back(p.rank);
    g.local_ranks.push_back(p.local_rank);
    g.local_sizes.insert(p.local_size);
    g.threads.insert(p.threads);
  }
  return groups;
}

// Local ranks as given: ranges when they are distinct ("0-1"), every value when some repeat
// ("0, 0, 1, 1": the tell-tale of two machines with one host name).
std::string local_list(std::vector<int> locals) {
  std::sort(locals.begin(), locals.end());
  if (std::adjacent_find(locals.begin(), locals.end()) == locals.end()) return format_rank_list(locals);
  std::ostringstream os;
  for (size_t i = 0; i < locals.size(); ++i) os << (i > 0 ? ", " : "") << locals[i];
  return os.str();
}

std::string join(const std::set<int>& values) {
  std::ostringstream os;
  for (auto it = values.begin(); it != values.end(); ++it) os << (it == values.begin() ? "" : "/") << *it;
  return os.str();
}

}  // namespace

std::string format_rank_list(const std::vector<int>& ranks) {
  std::ostringstream os;
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    os << (i > 0 ? ", " : "") << ranks[i];
    if (j > i) os << "-" << ranks[j];
    i = j + 1;
  }
  return os.str();
}

std::vector<RankPlace> gather_layout(Communicator& comm, const RankInfo& info, const std::string& host,
                                     int threads) {
  torch::Tensor mine = torch::zeros({kInts + kHostBytes / 8}, torch::kLong);
  mine[0] = info.local_rank;
  mine[1] = info.local_size;
  mine[2] = threads;
  std::strncpy(reinterpret_cast<char*>(mine.data_ptr<int64_t>() + kInts), host.c_str(), kHostBytes - 1);
  const torch::Tensor all = comm.all_gather(mine, "rank layout exchange").contiguous();
  std::vector<RankPlace> places;
  for (int r = 0; r < comm.world_size(); ++r) {
    const int64_t* row = all.data_ptr<int64_t>() + r * all.size(1);
    char name[kHostBytes] = {};
    std::memcpy(name, row + kInts, kHostBytes - 1);
    places.push_back(RankPlace{r, name, static_cast<int>(row[0]), static_cast<int>(row[1]),
                               static_cast<int>(row[2])});
  }
  return places;
}

std::string describe_layout(const std::vector<RankPlace>& places) {
  const auto groups = by_host(places);
  std::ostringstream os;
  os << "ranks on " << groups.size() << (groups.size() == 1 ? " host: " : " hosts: ");
  for (size_t i = 0; i < groups.size(); ++i) {
    const HostGroup& g = groups[i].second;
    const bool one = g.ranks.size() == 1;
    os << (i > 0 ? "; " : "") << groups[i].first << (one ? " rank " : " ranks ") << format_rank_list(g.ranks)
       << " (local " << local_list(g.local_ranks) << " of " << join(g.local_sizes) << ", " << join(g.threads)
       << (g.threads.size() == 1 && *g.threads.begin() == 1 ? " thread" : " threads") << (one ? ")" : " each)");
  }
  return os.str();
}

std::vector<std::string> check_layout(const std::vector<RankPlace>& places) {
  std::vector<std::string> problems;
  for (const auto& [host, g] : by_host(places)) {
    std::vector<int> locals = g.local_ranks;
    std::sort(locals.begin(), locals.end());
    std::vector<int> expected(locals.size());
    for (size_t i = 0; i < expected.size(); ++i) expected[i] = static_cast<int>(i);
    const int n = static_cast<int>(g.ranks.size());
    if (locals != expected || g.local_sizes != std::set<int>{n})
      problems.push_back(lf::str(
          "host ", host, " runs ranks ", format_rank_list(g.ranks), " (", n, " rank", n == 1 ? "" : "s",
          ") but the launcher gave them local ranks ", local_list(g.local_ranks), " and local size ",
          join(g.local_sizes), "; two machines with the same host name, or a launcher that miscounts: "
          "GPUs and default thread counts follow the local rank"));
  }
  return problems;
}

}  // namespace lf::dist
