// The subcommand table (see subcommands.h).
#include "launch/subcommands.h"

namespace lf::launch {

const std::vector<Subcommand>& subcommands() {
  static const std::vector<Subcommand> table = {};
  return table;
}

}  // namespace lf::launch
