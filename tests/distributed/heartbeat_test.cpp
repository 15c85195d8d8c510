// The heartbeat side channel: its sentence about the peers, and real UDP heartbeats between
// ranks simulated as threads of this process (loopback), one of which stops sending as a
// stopped or cut-off process would.
#include "distributed/heartbeat.h"

#include <gtest/gtest.h>

#include <thread>

#include "distributed/fake_communicator.h"
#include "tests/test_util.h"

namespace lf::dist {
namespace {

using lf::testing::contains;

TEST(HeartbeatReport, NamesTheSilentHostAndItsRanks) {
  const std::vector<PeerStatus> peers = {{1, "h1", true, 0.4}, {2, "h2", true, 19.62}, {3, "h2", true, 19.71}};
  EXPECT_EQ(describe_peers(peers, Seconds(3.0)),
            "no heartbeat from h2 (ranks 2-3) for 19.6 s: that host is down or cut off, or those ranks are "
            "stopped");
}

TEST(HeartbeatReport, SeveralSilentHosts) {
  const std::vector<PeerStatus> peers = {{1, "h2", true, 5.0}, {2, "h3", false, 8.0}, {3, "h1", true, 0.1}};
  EXPECT_EQ(describe_peers(peers, Seconds(3.0)),
            "no heartbeat from h2 (rank 1) for 5.0 s, h3 (rank 2) for 8.0 s: those hosts are down or cut off, "
            "or those ranks are stopped");
}

TEST(HeartbeatReport, EveryPeerAliveOrNoneEverHeard) {
  const std::vector<PeerStatus> alive = {{1, "h1", true, 0.5}, {2, "h2", true, 1.0}};
  EXPECT_TRUE(contains(describe_peers(alive, Seconds(3.0)), "every peer's heartbeat is current, so the peers are "
                                                            "alive"));
  const std::vector<PeerStatus> never = {{1, "h1", false, 30.0}, {2, "h2", false, 30.0}};
  EXPECT_TRUE(contains(describe_peers(never, Seconds(3.0)), "could not tell which peer failed"));
  EXPECT_EQ(describe_peers({}, Seconds(3.0)), "");
}

TEST(HeartbeatReport, TimeoutMessagesCarryTheInstalledReport) {
  EXPECT_TRUE(contains(timeout_message("[rank 0/2 h1]", "barrier", 2.0, 2.0), "could not tell which"));
  set_peer_report([] { return std::string("no heartbeat from h2 (rank 1) for 2.0 s: that host is down"); });
  EXPECT_EQ(timeout_message("[rank 0/2 h1]", "all_reduce of bucket 1/1", 20.04, 20.0),
            "[rank 0/2 h1] all_reduce of bucket 1/1 has not completed after 20.0 s (deadline 20.0 s); "
            "no heartbeat from h2 (rank 1) for 2.0 s: that host is down — ending the job");
  set_peer_report(nullptr);
  EXPECT_EQ(peer_report(), "");
}

TEST(Heartbeat, PeersHearEachOtherAndNoticeOneThatStops) {
  constexpr int kRanks = 3;
  auto world = FakeWorld::create(kRanks);
  std::vector<std::string> before(kRanks), after(kRanks);
  std::vector<std::vector<PeerStatus>> seen(kRanks);
  const auto errors = world->run([&](Communicator& comm) {
    Heartbeat::Options options;
    // Generous margins: the machine may be loaded (a thread can wait long for a core).
    options.period = Seconds(0.05);
    options.silent_after = Seconds(1.0);
    options.report_in_timeouts = comm.rank() == 0;
    Heartbeat heartbeat(comm, options);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    before[comm.rank()] = heartbeat.describe();
    comm.barrier("before the pause");
    if (comm.rank() == 2) heartbeat.pause_sending(true);
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    after[comm.rank()] = heartbeat.describe();
    seen[comm.rank()] = heartbeat.peers();
    if (comm.rank() == 0) {
      // Installed for rank 0: timeout messages now name the silent rank.
      EXPECT_TRUE(contains(timeout_message(comm.tag(), "barrier", 1.0, 1.0), "no heartbeat from")) <<
          timeout_message(comm.tag(), "barrier", 1.0, 1.0);
    }
    comm.barrier("after the pause");
  });
  for (const std::string& e : errors) EXPECT_EQ(e, "");
  EXPECT_EQ(peer_report(), "");  // removed with rank 0's heartbeat
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_TRUE(contains(before[r], "every peer's heartbeat is current")) << "rank " << r << ": " << before[r];
    ASSERT_EQ(seen[r].size(), 2u);
  }
  for (int r : {0, 1}) {
    EXPECT_TRUE(contains(after[r], "no heartbeat from ") && contains(after[r], " (rank 2) for "))
        << "rank " << r << ": " << after[r];
    for (const PeerStatus& p : seen[r]) {
      EXPECT_TRUE(p.heard);
      EXPECT_EQ(p.silent_s > 1.0, p.rank == 2) << "rank " << r << " on peer " << p.rank << ": " << p.silent_s;
    }
  }
  // Rank 2 still hears the others.
  EXPECT_TRUE(contains(after[2], "every peer's heartbeat is current")) << after[2];
}

}  // namespace
}  // namespace lf::dist
