// metrics.jsonl: one JSON object per logged step, appended by rank 0. On resume, records past
// the resumed step (written after that checkpoint by the interrupted run) are dropped, so the
// file always describes one timeline.
#pragma once
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace lf::launch {

class MetricsWriter {
 public:
  MetricsWriter() = default;
  // Opens RUN_DIR/metrics.jsonl for appending after dropping records with step > resume_step.
  void open(const std::string& path, int64_t resume_step);
  void write(const nlohmann::json& record);  // flushed at once
  bool is_open() const { return out_.is_open(); }

 private:
  std::ofstream out_;
};

}  // namespace lf::launch
