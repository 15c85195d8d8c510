// glog prefix with the rank tag, and the per-rank minimum log level.
#include "distributed/logging.h"

#include <iomanip>

#include "distributed/rank_context.h"

namespace lf::dist {

int log_level_for_rank(int rank) { return rank <= 0 ? google::GLOG_INFO : google::GLOG_WARNING; }

#ifdef GLOG_CUSTOM_PREFIX_SUPPORT
void rank_log_prefix(std::ostream& s, const google::LogMessageInfo& info, void*) {
  const char fill = s.fill();
  s << info.severity[0] << std::setfill('0') << std::setw(2) << 1 + info.time.month()
    << std::setw(2) << info.time.day() << ' ' << std::setw(2) << info.time.hour() << ':'
    << std::setw(2) << info.time.min() << ':' << std::setw(2) << info.time.sec() << '.'
    << std::setw(6) << info.time.usec() << std::setfill(fill) << ' ' << rank_tag() << ' '
    << info.filename << ':' << info.line_number << "]";
}

#endif

void init_rank_logging(const char* argv0) {
  if (!google::IsGoogleLoggingInitialized()) {
#ifdef GLOG_CUSTOM_PREFIX_SUPPORT
    google::InitGoogleLogging(argv0, &rank_log_prefix, nullptr);
#else
    google::InitGoogleLogging(argv0);
#endif
  }
  FLAGS_logtostderr = true;
  FLAGS_minloglevel = log_level_for_rank(rank_context().rank);
}

}  // namespace lf::dist
