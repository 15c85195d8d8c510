// Shared verification (see shared_verification.h).
#include "launch/shared_verification.h"

#include <cmath>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <vector>

#include "core/util/progress.h"
#include "core/util/strings.h"
#include "distributed/agreement.h"

namespace lf::launch {

void verify_shared(int64_t count, const std::function<void(int64_t)>& verify_one, dist::Communicator& comm,
                   const std::string& what, const std::vector<double>& weights, const std::string& unit) {
  const int rank = comm.rank();
  const int world = comm.world_size();
  auto weight = [&](int64_t i) { return static_cast<size_t>(i) < weights.size() ? weights[i] : 1.0; };
  std::optional<Progress> progress;
  if (rank == 0) {
    double total = 0;
    for (int64_t i = rank; i < count; i += world) total += weight(i);
    progress.emplace(world > 1 ? str(what, " (rank 0's share)") : what, static_cast<int64_t>(std::ceil(total)), unit);
  }
  int64_t failed = -1;
  std::string message;
  double done = 0;
  for (int64_t i = rank; i < count && failed < 0; i += world) {
    try {
      verify_one(i);
    } catch (const std::exception& e) {
      failed = i;
      message = e.what();
    }
    done += weight(i);
    if (progress) progress->update(static_cast<int64_t>(std::ceil(done)));
  }
  if (progress) progress->finish();
  if (world == 1) {
    if (failed >= 0) throw std::runtime_error(message);
    return;
  }
  // Every rank gathers every rank's message, so whichever rank ends the job first prints the
  // finder's own words (the first ending rank's message is the one a launcher shows).
  constexpr int64_t kMessageBytes = 1024;
  at::Tensor mine = at::zeros({kMessageBytes}, at::kByte);
  std::memcpy(mine.data_ptr(), message.data(), std::min<size_t>(message.size(), kMessageBytes - 1));
  const at::Tensor all = comm.all_gather(mine, str(what, " (each rank checked its share)"));
  std::vector<std::string> messages(static_cast<size_t>(world));
  for (int r = 0; r < world; ++r) messages[r] = std::string(static_cast<const char*>(all[r].contiguous().data_ptr()));
  for (int r = 0; r < world; ++r)
    if (!messages[r].empty())
      throw std::runtime_error(str(what, ": rank ", r, " found: ", messages[r]));
}

}  // namespace lf::launch
