// Small collectives through which ranks agree: on a flag (a signal seen by any rank stops
// every rank at the same step boundary) and on values that must be identical everywhere
// (the bucket plan, parameter shapes, a config hash).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "distributed/communicator.h"

namespace lf::dist {

// True on every rank when `local_flag` is true on at least one (all-reduce max). Call at the
// same point on every rank (e.g. a step boundary, with what = "stop flag at step 41"), so all
// stop at the same step. Collective; blocks up to the communicator's timeout.
bool any_rank(Communicator& comm, bool local_flag, const std::string& what);

// Every rank's value of `values` (all-gather of int64), [world][values.size()]. Every rank must
// pass the same number of values. Collective, blocking.
std::vector<std::vector<int64_t>> gather_values(Communicator& comm,
                                                const std::vector<int64_t>& values,
                                                const std::string& what);

// Checks that every rank holds the same `values` (named by `names`, same length). Throws
// std::runtime_error on every rank when they differ, naming the first differing value, the
// two ranks and both values, in hex when `hex` (for hashes). Collective, blocking.
// `hint` ends the message (what to do about it).
void verify_same_on_all_ranks(Communicator& comm, const std::vector<int64_t>& values,
                              const std::vector<std::string>& names, const std::string& what,
                              bool hex = false,
                              const std::string& hint = "every rank must build the same model (same "
                                                        "config and code version)");

// Root's `text` on every rank (a broadcast of its length, then of its bytes), waiting until
// `deadline`. Collective, blocking.
std::string broadcast_string(Communicator& comm, const std::string& text, int root, Deadline deadline,
                             const std::string& what);

// Every rank's `text`, indexed by rank (an all-gather of the lengths, then of the bytes padded to
// the longest), waiting until `deadline`. Collective, blocking.
std::vector<std::string> all_gather_strings(Communicator& comm, const std::string& text, Deadline deadline,
                                            const std::string& what);

}  // namespace lf::dist
