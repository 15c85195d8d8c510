// glog set-up for a rank: every line carries "[rank r/N host]" (glog 0.6's custom prefix),
// and rank 0 alone logs progress (INFO); other ranks log warnings and errors only.
#pragma once
#include <glog/logging.h>

#include <ostream>

namespace lf::dist {

// Initialises glog with the rank prefix, to stderr, and applies log_level_for_rank(). Call
// once in main() after the rank context is set (MPIRuntime or set_rank_context).
void init_rank_logging(const char* argv0);

// FLAGS_minloglevel for `rank`: INFO on rank 0, WARNING elsewhere (docs/design.md, invariant 7).
int log_level_for_rank(int rank);

#ifdef GLOG_CUSTOM_PREFIX_SUPPORT
// glog CustomPrefixCallback: "I0102 03:04:05.678901 [rank 1/4 node7] file.cpp:42] ".
// `data` is unused (the process-wide rank context is read); exposed for tests. glog 0.6 API
// (Debian 12); a glog without GLOG_CUSTOM_PREFIX_SUPPORT gets glog's own prefix.
void rank_log_prefix(std::ostream& s, const google::LogMessageInfo& info, void* data);
#endif

}  // namespace lf::dist
