// The one wording of a bad choice (see enum_table.h).
#include "core/util/enum_table.h"

namespace lf {

std::string bad_choice_message(const std::string& key, const std::string& value, const std::vector<std::string>& names) {
  std::string hint = closest_match(value, names);
  return str(key, " = '", value, "': expected one of ", join(names, ", "),
             hint.empty() ? "" : str(" (did you mean '", hint, "'?)"));
}

}  // namespace lf
