// metrics.jsonl writer (see metrics.h).
#include "launch/metrics.h"

#include <filesystem>
#include <sstream>

#include "core/util/fs.h"
#include "core/util/json.h"

namespace lf::launch {

void MetricsWriter::open(const std::string& path, int64_t resume_step) {
  if (std::filesystem::exists(path)) {
    std::istringstream in(read_file(path));
    std::string line, kept;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      try {
        auto j = parse_json(line, path);  // bounded: one deep line must not crash the resume
        if (j.value("step", int64_t{0}) > resume_step) continue;
      } catch (const std::invalid_argument&) {
        continue;  // a torn last line from a killed run
      } catch (const nlohmann::json::exception&) {
        continue;  // not a record this program wrote
      }
      kept += line + "\n";
    }
    atomic_write_file(path, kept);
  }
  out_.open(path, std::ios::app);
  if (!out_) throw std::runtime_error(path + ": cannot open for appending");
}

void MetricsWriter::write(const nlohmann::json& record) {
  if (!out_.is_open()) return;
  out_ << record.dump() << "\n";
  out_.flush();
}

}  // namespace lf::launch
