// Deadline arithmetic and the backoff polling loop used by every non-blocking wait.
#include "distributed/deadline.h"

#include <algorithm>
#include <iomanip>
#include <mutex>
#include <sstream>
#include <thread>

namespace lf::dist {

Deadline Deadline::after(Seconds timeout) {
  const Clock::time_point now = Clock::now();
  // Saturate: a huge timeout means "never", not an overflowed time point in the past.
  if (timeout >= std::chrono::duration_cast<Seconds>(Clock::time_point::max() - now))
    return never();
  return Deadline{now + std::chrono::duration_cast<Clock::duration>(timeout)};
}

void Backoff::pause() {
  if (calls_++ < policy_.spins) {
    std::this_thread::yield();
    return;
  }
  sleep_ = sleep_.count() == 0 ? std::max(policy_.min_sleep, std::chrono::microseconds(1))
                               : std::min(sleep_ * 2, std::max(policy_.max_sleep, sleep_));
  std::this_thread::sleep_for(sleep_);
}

bool poll_until(const std::function<bool()>& done, Deadline deadline, const PollPolicy& policy) {
  Backoff backoff(policy);
  while (true) {
    if (done()) return true;
    if (deadline.passed()) return false;
    backoff.pause();
  }
}

namespace {

std::mutex& peer_report_mutex() {
  static std::mutex mutex;
  return mutex;
}

PeerReport& peer_report_slot() {
  static PeerReport report;
  return report;
}

}  // namespace

void set_peer_report(PeerReport report) {
  std::lock_guard<std::mutex> lock(peer_report_mutex());
  peer_report_slot() = std::move(report);
}

std::string peer_report() {
  std::lock_guard<std::mutex> lock(peer_report_mutex());
  return peer_report_slot() ? peer_report_slot()() : std::string();
}

std::string timeout_message(const std::string& tag, const std::string& what, double waited_s,
                            double timeout_s) {
  std::string peers = peer_report();
  if (peers.empty())
    peers = "a peer rank may have died, hung, or issued its collectives in a different order "
            "(no heartbeat: could not tell which)";
  std::ostringstream os;
  os << std::fixed << std::setprecision(1) << tag << " " << what << " has not completed after "
     << waited_s << " s (deadline " << timeout_s << " s); " << peers << " — ending the job";
  return os.str();
}

}  // namespace lf::dist
