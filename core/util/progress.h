// A progress meter for long loops (encode, training, sampling): rate, done/total and ETA,
// redrawn in place with '\r' on a terminal and printed as periodic log lines otherwise.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

namespace lf {

class Progress {
 public:
  // Receives each rendered line; `in_place` is true when the line should overwrite the
  // previous one (terminal mode). The default sink writes to stderr.
  using Sink = std::function<void(const std::string& line, bool in_place)>;

  // `label` prefixes every line ("encode"); `total` may be 0 when unknown (no ETA then);
  // `unit` names what is counted ("images"). Terminal mode is chosen when stderr is a tty,
  // unless a sink is given (then `terminal` says which mode to use).
  Progress(std::string label, int64_t total, std::string unit = "items",
           double log_interval_s = 10.0);
  Progress(std::string label, int64_t total, std::string unit, double log_interval_s,
           Sink sink, bool terminal);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Adds `n` finished items (or sets the absolute count). Cheap: redraws at most ~10 times a
  // second on a terminal and once per `log_interval_s` otherwise. Not thread-safe.
  void add(int64_t n) { update(done_ + n); }
  void update(int64_t done);
  // Marks the start of the measured span again (e.g. after skipped work, so that items
  // counted as already done do not inflate the rate).
  void reset_rate();
  // Prints the final line (with total time) once; called by the destructor if not before.
  void finish();

  int64_t done() const { return done_; }
  // items/s since construction or reset_rate(); 0 before any time has passed.
  double rate() const;
  // The line as it would be printed now, e.g.
  // "encode 3,200/60,000 images (5.3%) 812.4 images/s ETA 1m10s".
  std::string line() const;

 private:
  using Clock = std::chrono::steady_clock;
  void emit(bool force);

  std::string label_, unit_;
  int64_t total_, done_ = 0, rate_base_ = 0;
  double log_interval_s_;
  Sink sink_;
  bool terminal_, finished_ = false, drawn_ = false;
  Clock::time_point start_, rate_start_, last_emit_;
};

}  // namespace lf
