// A heartbeat side channel between the ranks, independent of MPI: every rank sends a small UDP
// datagram to every other rank once a period from a thread of its own, and remembers when it
// last heard from each. MPI cannot say which peer a stuck collective waits for (Open MPI 4.1
// makes no progress in the background and has no timeouts); the heartbeat can say which host
// went silent, so that a timeout message names it (docs/cluster.md, "When a host fails").
#pragma once
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "distributed/communicator.h"
#include "distributed/deadline.h"

namespace lf::dist {

// What one rank knows about a peer.
struct PeerStatus {
  int rank = 0;
  std::string host;
  bool heard = false;     // any heartbeat received since the start
  double silent_s = 0.0;  // seconds since the last one (or since the start, when never heard)
};

// The sentence a timeout message carries about the peers (pure; tested on its own):
//   some silent:   "no heartbeat from host h2 (ranks 2-3) for 19.6 s: that host is down, cut
//                  off or its processes are stopped"
//   none silent:   "every peer's heartbeat is current, so the peers are alive: one is stuck
//                  outside this operation (or the ranks issued operations in different orders)"
//   none ever heard: "no heartbeat has arrived from any peer (UDP between the hosts blocked?):
//                  could not tell which peer failed"
// A peer counts as silent when its last heartbeat is more than `silent_after` old. `peers`
// excludes the caller.
std::string describe_peers(const std::vector<PeerStatus>& peers, Seconds silent_after);

class Heartbeat {
 public:
  struct Options {
    Seconds period{1.0};        // between two heartbeats to each peer
    Seconds silent_after{3.0};  // a peer unheard for longer is reported silent
    bool report_in_timeouts = true;  // install describe() as timeout messages' peer report
  };

  // Collective over `comm` (one all_gather of every rank's UDP port, addresses and host name),
  // then starts the thread. Sends to a peer on the same host over the loopback, to one on
  // another host to each IPv4 address of that host's interfaces. A host without a usable socket
  // logs a warning and reports "could not tell"; network errors never end the job.
  Heartbeat(Communicator& comm, Options options);
  explicit Heartbeat(Communicator& comm) : Heartbeat(comm, Options{}) {}
  ~Heartbeat();  // stops the thread; removes the timeout report if it installed one
  Heartbeat(const Heartbeat&) = delete;
  Heartbeat& operator=(const Heartbeat&) = delete;

  // Every other rank's status now. Thread-safe.
  std::vector<PeerStatus> peers() const;
  // describe_peers(peers(), silent_after), or "" when the channel could not be opened.
  std::string describe() const;

  // Tests: stop sending (the process looks stopped to its peers) or resume.
  void pause_sending(bool paused) { paused_ = paused; }

 private:
  struct Endpoint;
  void loop();
  void send_all();
  void receive_all();

  int rank_;
  int world_;
  Options options_;
  int socket_ = -1;
  uint64_t nonce_ = 0;
  std::vector<Endpoint> endpoints_;  // per rank
  Clock::time_point started_;
  mutable std::mutex mutex_;
  std::vector<Clock::time_point> last_heard_;  // per rank; started_ when never heard
  std::vector<bool> heard_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> paused_{false};
  uint32_t sequence_ = 0;
  std::thread thread_;
};

}  // namespace lf::dist
