// Deadlines for collectives (MPI has no timeouts of its own), the polling loop that waits on
// them without burning a core, and the two errors a collective can end with besides its own.
#pragma once
#include <chrono>
#include <functional>
#include <stdexcept>
#include <string>

namespace lf::dist {

using Clock = std::chrono::steady_clock;
using Seconds = std::chrono::duration<double>;

struct Deadline {
  Clock::time_point at = Clock::time_point::max();

  static Deadline after(Seconds timeout);  // now + timeout
  static Deadline never() { return Deadline{}; }
  bool passed() const { return Clock::now() >= at; }
  bool is_never() const { return at == Clock::time_point::max(); }
};

// How a waiter polls: `spins` tests back to back (with a yield) for short operations, then
// sleeps between tests, doubling from `min_sleep` up to `max_sleep`. Open MPI 4.1 advances a
// non-blocking collective only inside MPI calls (no progress thread), so every test is also
// progress: shorter sleeps finish large reductions sooner but take CPU from computation.
struct PollPolicy {
  int spins = 64;
  std::chrono::microseconds min_sleep{10};
  std::chrono::microseconds max_sleep{200};
};

// The pause between two polls under a PollPolicy: yields for the first `spins` calls, then
// sleeps, doubling from min_sleep to max_sleep. reset() after progress.
class Backoff {
 public:
  explicit Backoff(const PollPolicy& policy) : policy_(policy) {}
  void pause();
  void reset() { calls_ = 0; sleep_ = std::chrono::microseconds(0); }

 private:
  PollPolicy policy_;
  int calls_ = 0;
  std::chrono::microseconds sleep_{0};
};

// Calls done() until it returns true (-> true) or the deadline passes (-> false). Exceptions
// from done() propagate. Blocks the calling thread.
bool poll_until(const std::function<bool()>& done, Deadline deadline, const PollPolicy& policy);

// A collective did not complete before its deadline. The message names the rank, the
// operation and the time waited; the job should end (abort_job), since the communicator's
// state is no longer consistent across ranks.
class CollectiveTimeout : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Another rank ended the job (the in-process fake's stand-in for MPI_Abort).
class JobAborted : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// "[rank r/N host] <what> has not completed after 30.0 s (deadline 30.0 s); <peers> — ending
// the job", where <peers> is the installed peer report (the heartbeat's: which host went
// silent, or that every peer is alive) or, without one, "a peer rank may have died, hung, or
// issued its collectives in a different order (no heartbeat: could not tell which)".
std::string timeout_message(const std::string& tag, const std::string& what, double waited_s,
                            double timeout_s);

// The process-wide source of timeout messages' sentence about the peers (Heartbeat installs
// one; nullptr removes it). Thread-safe: removal waits for a report in progress.
using PeerReport = std::function<std::string()>;
void set_peer_report(PeerReport report);
std::string peer_report();  // "" when none is installed

}  // namespace lf::dist
