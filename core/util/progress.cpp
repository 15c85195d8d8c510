// Progress meter (see progress.h).
#include "core/util/progress.h"

#include <unistd.h>

#include <cstdio>
#include <utility>

#include "core/util/strings.h"

namespace lf {

namespace {

// "60,000": thousands separators make large counts readable at a glance.
std::string grouped(int64_t v) {
  std::string digits = std::to_string(v < 0 ? -v : v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return v < 0 ? "-" + out : out;
}

void stderr_sink(const std::string& line, bool in_place) {
  if (in_place)
    std::fprintf(stderr, "\r%s\033[K", line.c_str());
  else
    std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace

Progress::Progress(std::string label, int64_t total, std::string unit, double log_interval_s)
    : Progress(std::move(label), total, std::move(unit), log_interval_s, stderr_sink,
               ::isatty(::fileno(stderr)) != 0) {}

Progress::Progress(std::string label, int64_t total, std::string unit, double log_interval_s,
                   Sink sink, bool terminal)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      log_interval_s_(log_interval_s),
      sink_(std::move(sink)),
      terminal_(terminal),
      start_(Clock::now()),
      rate_start_(start_),
      last_emit_(start_) {}

Progress::~Progress() {
  try {
    finish();
  } catch (...) {
    // A failing sink must not turn stack unwinding into std::terminate.
  }
}

void Progress::reset_rate() {
  rate_start_ = Clock::now();
  rate_base_ = done_;
}

double Progress::rate() const {
  double s = std::chrono::duration<double>(Clock::now() - rate_start_).count();
  return s > 0 ? static_cast<double>(done_ - rate_base_) / s : 0.0;
}

std::string Progress::line() const {
  std::string s = str(label_, " ", grouped(done_));
  if (total_ > 0) {
    char pct[32];
    std::snprintf(pct, sizeof pct, " (%.1f%%)", 100.0 * static_cast<double>(done_) / total_);
    s += str("/", grouped(total_), " ", unit_, pct);
  } else {
    s += " " + unit_;
  }
  double r = rate();
  char buf[64];
  std::snprintf(buf, sizeof buf, " %.1f %s/s", r, unit_.c_str());
  s += buf;
  if (finished_) {
    s += " in " + human_duration(std::chrono::duration<double>(Clock::now() - start_).count());
  } else if (total_ > 0 && r > 0) {
    s += " ETA " + human_duration(static_cast<double>(total_ - done_) / r);
  }
  return s;
}

void Progress::update(int64_t done) {
  done_ = done;
  emit(false);
}

void Progress::emit(bool force) {
  auto now = Clock::now();
  double since = std::chrono::duration<double>(now - last_emit_).count();
  double interval = terminal_ ? 0.1 : log_interval_s_;
  if (!force && since < interval) return;
  last_emit_ = now;
  sink_(line(), terminal_);
  drawn_ = true;
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  emit(true);
  // End the in-place line so later output starts on a fresh one.
  if (terminal_ && drawn_) sink_("", false);
}

}  // namespace lf
