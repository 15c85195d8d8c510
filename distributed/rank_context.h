// Who this process is (rank, world size, host), set once at start-up and read by every error
// message, log line and abort so that each names its rank: "[rank r/N host]".
#pragma once
#include <string>

namespace lf::dist {

struct RankContext {
  int rank = -1;       // -1 until set: messages then say "[rank ?/? host]"
  int world_size = 0;
  std::string host;    // short host name
};

// Sets the process-wide context. Call once after rank discovery / MPI_Init, before threads
// that log are started (it is not synchronised against concurrent readers).
void set_rank_context(const RankContext& context);

// The process-wide context; host is filled from gethostname() even before set_rank_context.
const RankContext& rank_context();

// "[rank r/N host]" for the process-wide context, or for the given values.
std::string rank_tag();
std::string rank_tag(int rank, int world_size, const std::string& host);

// This machine's host name (gethostname), "unknown-host" when it cannot be read.
std::string local_host_name();

}  // namespace lf::dist
