// A watchdog thread for blocking sections that cannot poll a deadline themselves (a blocking
// library call, a checkpoint write, NCCL initialisation): arm it with what is being done and
// a timeout; if the guard is still alive when the timeout passes, the handler gets a message
// naming the rank, the operation and the time waited (by default: abort_job).
#pragma once
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "distributed/deadline.h"

namespace lf::dist {

class Watchdog {
 public:
  using Handler = std::function<void(const std::string& message)>;

  // `tag` prefixes messages ("[rank r/N host]"); the default handler is abort_job. Starts the
  // watchdog thread, which checks its deadlines every `period`.
  explicit Watchdog(std::string tag, Handler on_expired = nullptr, Seconds period = Seconds(0.05));
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  class Guard {
   public:
    Guard(Guard&& other) noexcept : owner_(other.owner_), id_(other.id_) { other.owner_ = nullptr; }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    ~Guard();  // disarms

   private:
    friend class Watchdog;
    Guard(Watchdog* owner, int64_t id) : owner_(owner), id_(id) {}
    Watchdog* owner_;
    int64_t id_;
  };

  // Arms a deadline `timeout` from now for `what`; disarmed when the Guard is destroyed.
  // Each armed entry fires at most once. Thread-safe.
  Guard arm(const std::string& what, Seconds timeout);

 private:
  struct Entry {
    std::string what;
    Clock::time_point armed;
    Clock::time_point deadline;
  };
  void loop();
  void disarm(int64_t id);

  std::string tag_;
  Handler handler_;
  Seconds period_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::map<int64_t, Entry> entries_;
  int64_t next_id_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace lf::dist
