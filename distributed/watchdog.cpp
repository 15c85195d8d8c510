// Watchdog: a thread that fires a handler for armed sections past their deadline.
#include "distributed/watchdog.h"

#include <vector>

#include "distributed/abort.h"

namespace lf::dist {

Watchdog::Watchdog(std::string tag, Handler on_expired, Seconds period)
    : tag_(std::move(tag)),
      handler_(on_expired ? std::move(on_expired)
                          : Handler([](const std::string& m) { abort_job(m); })),
      period_(period) {
  thread_ = std::thread([this] { loop(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

Watchdog::Guard Watchdog::arm(const std::string& what, Seconds timeout) {
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t id = next_id_++;
  entries_[id] = Entry{what, Clock::now(), Deadline::after(timeout).at};
  return Guard(this, id);
}

Watchdog::Guard::~Guard() {
  if (owner_ != nullptr) owner_->disarm(id_);
}

void Watchdog::disarm(int64_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.erase(id);
}

void Watchdog::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_) {
    wake_.wait_for(lock, period_, [this] { return stop_; });
    if (stop_) return;
    std::vector<std::string> expired;
    const Clock::time_point now = Clock::now();
    for (auto it = entries_.begin(); it != entries_.end();) {
      if (now < it->second.deadline) {
        ++it;
        continue;
      }
      const Entry& e = it->second;
      expired.push_back(timeout_message(
          tag_, e.what, std::chrono::duration_cast<Seconds>(now - e.armed).count(),
          std::chrono::duration_cast<Seconds>(e.deadline - e.armed).count()));
      it = entries_.erase(it);
    }
    lock.unlock();
    for (const std::string& message : expired) handler_(message);
    lock.lock();
  }
}

}  // namespace lf::dist
