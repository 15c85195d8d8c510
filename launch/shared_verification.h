// Verifying many independent items (a cache's shards) on every rank at once, then agreeing:
// rank r of W checks items r, r+W, ..., and one all-gather tells every rank which failed. Rank 0
// alone hashing a large cache while the others wait in a collective under dist.timeout_s would
// end the job by its own deadline (docs/design.md, invariant 10); shared, each rank waits at
// most for the slowest peer's share.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "distributed/communicator.h"

namespace lf::launch {

// Calls verify_one(i) for this rank's items (it throws, naming the item and what is wrong),
// then agrees with the other ranks: one all-gather of each rank's first failure message
// (collective, the communicator's deadline counted from when this rank is done). Throws
// std::runtime_error on every rank, with the same text, when any item failed: `what` (e.g.
// "verification of the cache runs/cache"), the lowest failing rank and its message. Rank 0
// shows a progress meter of its share: `weights[i]` (e.g. MB) per item, `unit` naming them;
// without weights it counts items.
void verify_shared(int64_t count, const std::function<void(int64_t)>& verify_one, dist::Communicator& comm,
                   const std::string& what, const std::vector<double>& weights = {},
                   const std::string& unit = "items");

}  // namespace lf::launch
