// any_rank and the cross-rank equality checks behind start-up verification.
#include "distributed/agreement.h"

#include <algorithm>
#include <cstring>
#include <iomanip>
#include <sstream>
#include <stdexcept>

#include "core/util/strings.h"

namespace lf::dist {
namespace {

std::string format_value(int64_t v, bool hex) {
  if (!hex) return std::to_string(v);
  std::ostringstream os;
  os << std::hex << std::setw(16) << std::setfill('0') << static_cast<uint64_t>(v);
  return os.str();
}

}  // namespace

bool any_rank(Communicator& comm, bool local_flag, const std::string& what) {
  torch::Tensor flag = torch::full({1}, local_flag ? 1 : 0, torch::kInt);
  comm.all_reduce(flag, ReduceOp::kMax, what);
  return flag.item<int>() != 0;
}

std::vector<std::vector<int64_t>> gather_values(Communicator& comm,
                                                const std::vector<int64_t>& values,
                                                const std::string& what) {
  torch::Tensor mine = torch::tensor(values, torch::kLong);
  if (values.empty()) mine = torch::empty({0}, torch::kLong);
  torch::Tensor all = comm.all_gather(mine, what);
  std::vector<std::vector<int64_t>> result(static_cast<size_t>(comm.world_size()));
  for (int r = 0; r < comm.world_size(); ++r) {
    torch::Tensor row = all[r].contiguous();
    result[static_cast<size_t>(r)].assign(row.data_ptr<int64_t>(),
                                          row.data_ptr<int64_t>() + row.numel());
  }
  return result;
}

void verify_same_on_all_ranks(Communicator& comm, const std::vector<int64_t>& values,
                              const std::vector<std::string>& names, const std::string& what,
                              bool hex, const std::string& hint) {
  if (names.size() != values.size())
    throw std::invalid_argument(lf::str("verify_same_on_all_ranks(", what, "): ", values.size(),
                                    " values but ", names.size(), " names"));
  const auto all = gather_values(comm, values, what);
  for (size_t r = 1; r < all.size(); ++r) {
    for (size_t i = 0; i < values.size(); ++i) {
      if (all[r][i] == all[0][i]) continue;
      throw std::runtime_error(lf::str(comm.tag(), " ", what, " differs between ranks: rank 0 has ",
                                   names[i], "=", format_value(all[0][i], hex), ", rank ", r,
                                   " has ", names[i], "=", format_value(all[r][i], hex), "; ",
                                   hint));
    }
  }
}

std::string broadcast_string(Communicator& comm, const std::string& text, int root, Deadline deadline,
                             const std::string& what) {
  torch::Tensor size = torch::tensor({static_cast<int64_t>(text.size())}, torch::kLong);
  comm.broadcast(size, root, deadline, what + " (its length)");
  const int64_t n = size.item<int64_t>();
  if (n == 0) return std::string();
  torch::Tensor bytes = torch::empty({n}, torch::kUInt8);
  if (comm.rank() == root) std::memcpy(bytes.data_ptr(), text.data(), static_cast<size_t>(n));
  comm.broadcast(bytes, root, deadline, what);
  return std::string(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(n));
}

std::vector<std::string> all_gather_strings(Communicator& comm, const std::string& text, Deadline deadline,
                                            const std::string& what) {
  const int world = comm.world_size();
  torch::Tensor size = torch::tensor({static_cast<int64_t>(text.size())}, torch::kLong);
  torch::Tensor sizes = torch::empty({world, 1}, torch::kLong);
  comm.all_gather_async(size, sizes, what + " (lengths)")->wait(deadline);
  int64_t longest = 0;
  for (int r = 0; r < world; ++r) longest = std::max(longest, sizes[r][0].item<int64_t>());
  std::vector<std::string> out(static_cast<size_t>(world));
  if (longest == 0) return out;
  torch::Tensor mine = torch::zeros({longest}, torch::kUInt8);
  std::memcpy(mine.data_ptr(), text.data(), text.size());
  torch::Tensor all = torch::empty({world, longest}, torch::kUInt8);
  comm.all_gather_async(mine, all, what)->wait(deadline);
  for (int r = 0; r < world; ++r)
    out[static_cast<size_t>(r)].assign(static_cast<const char*>(all[r].data_ptr()),
                                       static_cast<size_t>(sizes[r][0].item<int64_t>()));
  return out;
}

}  // namespace lf::dist
