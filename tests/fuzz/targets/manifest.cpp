// Fuzz target of the cache manifest reader; what it accepts must survive a write-read round
// trip unchanged.
#include <stdexcept>

#include "data/manifest.h"
#include "tests/fuzz/fuzz_target.h"

namespace lf::fuzz {

void run_manifest(const uint8_t* data, size_t size, const std::string& path, const std::string&) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const data::Manifest m = data::Manifest::parse(text, path);
  const nlohmann::json j = m.to_json();
  const data::Manifest again = data::Manifest::parse(j.dump(), path);
  if (again.to_json() != j) throw std::logic_error("manifest changed in a write-read round trip");
}

}  // namespace lf::fuzz
