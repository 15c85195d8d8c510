// The sample stream and batch layout (see sample_stream.h).
#include "data/sample_stream.h"

#include <stdexcept>

#include "core/util/strings.h"

namespace lf::data {

void BatchLayout::validate() const {
  if (global_batch < 1 || world < 1 || rank < 0 || rank >= world || accum < 1)
    throw std::invalid_argument(lf::str("batch layout: global batch ", global_batch, ", rank ",
                                        rank, " of world ", world, ", accumulation ", accum,
                                        ": expected B >= 1, 0 <= rank < world, accum >= 1"));
  if (global_batch % (world * accum) != 0)
    throw std::invalid_argument(lf::str(
        "global batch ", global_batch, " is not divisible by world size ", world, " x accumulation ", accum,
        " = ", world * accum, "; every rank must get the same number of samples per micro-batch"));
}

std::pair<int64_t, int64_t> micro_batch_positions(const BatchLayout& layout, int64_t step,
                                                  int64_t micro) {
  if (step < 0 || micro < 0 || micro >= layout.accum)
    throw std::invalid_argument(lf::str("micro_batch_positions: step ", step, ", micro ", micro,
                                        " of ", layout.accum));
  const int64_t begin = step * layout.global_batch + layout.rank * layout.per_rank() +
                        micro * layout.micro_size();
  return {begin, begin + layout.micro_size()};
}

SampleStream::SampleStream(int64_t num_samples, uint64_t seed, OrderOptions order)
    : n_(num_samples), seed_(seed), options_(order) {
  if (n_ < 1) throw std::invalid_argument(lf::str("SampleStream: dataset size ", n_, " < 1"));
  options_.validate();
}

const std::vector<int64_t>& SampleStream::order(int64_t epoch) {
  auto it = orders_.find(epoch);
  if (it != orders_.end()) return it->second;
  // A batch spans at most two epochs (when B <= n) and steps move forward: keep two.
  while (orders_.size() >= 2) orders_.erase(orders_.begin());
  return orders_.emplace(epoch, epoch_order(n_, seed_, epoch, options_)).first->second;
}

void SampleStream::lookup(int64_t begin, int64_t end, int64_t* index, int64_t* epoch) {
  if (begin < 0 || end < begin)
    throw std::invalid_argument(lf::str("SampleStream: bad position range [", begin, ", ", end, ")"));
  for (int64_t p = begin; p < end;) {
    const int64_t e = p / n_;
    const std::vector<int64_t>& ord = order(e);
    const int64_t stop = std::min(end, (e + 1) * n_);
    for (; p < stop; ++p) {
      index[p - begin] = ord[static_cast<size_t>(p - e * n_)];
      epoch[p - begin] = e;
    }
  }
}

}  // namespace lf::data
