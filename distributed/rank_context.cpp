// The process-wide rank context behind every "[rank r/N host]" tag.
#include "distributed/rank_context.h"

#include <unistd.h>

#include "core/util/strings.h"

namespace lf::dist {
namespace {

RankContext& mutable_context() {
  static RankContext context{-1, 0, local_host_name()};
  return context;
}

}  // namespace

void set_rank_context(const RankContext& context) {
  RankContext& c = mutable_context();
  c = context;
  if (c.host.empty()) c.host = local_host_name();
}

const RankContext& rank_context() { return mutable_context(); }

std::string rank_tag(int rank, int world_size, const std::string& host) {
  if (rank < 0) return lf::str("[rank ?/? ", host, "]");
  return lf::str("[rank ", rank, "/", world_size, " ", host, "]");
}

std::string rank_tag() {
  const RankContext& c = rank_context();
  return rank_tag(c.rank, c.world_size, c.host);
}

std::string local_host_name() {
  char name[256] = {0};
  if (gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "unknown-host";
  std::string host(name);
  // The short name is what people recognise in a hostfile and what keeps log lines short.
  const size_t dot = host.find('.');
  return dot == std::string::npos ? host : host.substr(0, dot);
}

}  // namespace lf::dist
