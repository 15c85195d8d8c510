// The glog prefix carries "[rank r/N host]", and only rank 0 logs INFO.
#include "distributed/logging.h"

#include <gtest/gtest.h>

#include <sstream>

#include "distributed/rank_context.h"

namespace lf::dist {
namespace {

#ifdef GLOG_CUSTOM_PREFIX_SUPPORT
TEST(RankLogging, PrefixCarriesTheRankTag) {
  set_rank_context(RankContext{1, 4, "gpu-node-07"});
  std::tm t{};
  t.tm_year = 124;
  t.tm_mon = 0;  // January
  t.tm_mday = 2;
  t.tm_hour = 3;
  t.tm_min = 4;
  t.tm_sec = 5;
  const google::LogMessageTime time(t);
  const int line = 42;
  const int thread = 7;
  const google::LogMessageInfo info("WARNING", "reducer.cpp", line, thread, time);
  std::ostringstream os;
  rank_log_prefix(os, info, nullptr);
  EXPECT_EQ(os.str().substr(0, 14), "W0102 03:04:05") << os.str();
  EXPECT_NE(os.str().find(" [rank 1/4 gpu-node-07] reducer.cpp:42]"), std::string::npos) << os.str();
  set_rank_context(RankContext{});
}
#endif

TEST(RankLogging, OnlyRankZeroLogsInfo) {
  EXPECT_EQ(log_level_for_rank(0), google::GLOG_INFO);
  EXPECT_EQ(log_level_for_rank(1), google::GLOG_WARNING);
  EXPECT_EQ(log_level_for_rank(63), google::GLOG_WARNING);
  EXPECT_EQ(rank_tag(3, 16, "n1"), "[rank 3/16 n1]");
  EXPECT_EQ(rank_tag(-1, 0, "n1"), "[rank ?/? n1]");
}

}  // namespace
}  // namespace lf::dist
