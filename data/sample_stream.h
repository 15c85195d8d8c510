// The sample stream the trainer consumes: the concatenation of the epochs' orders, cut into
// global batches of B positions; rank r of W takes the r-th contiguous slice of B/W, split
// into A micro-batches of B/(W·A) (docs/design.md, invariant 1). Any step's samples are computed
// directly from its number, so a run resumes at any step without replaying what came before.
#pragma once
#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "data/epoch_order.h"

namespace lf::data {

struct BatchLayout {
  int64_t global_batch = 0;  // B: samples per optimizer step over all ranks
  int64_t world = 1;         // W
  int64_t rank = 0;          // r
  int64_t accum = 1;         // A: gradient-accumulation micro-batches per step
  // Throws std::invalid_argument unless B > 0, 0 <= r < W, A >= 1 and W·A divides B.
  void validate() const;
  int64_t per_rank() const { return global_batch / world; }
  int64_t micro_size() const { return global_batch / (world * accum); }
};

// Stream positions [begin, end) of micro-batch `micro` of `step` for the layout's rank:
// begin = step·B + r·B/W + micro·B/(W·A).
std::pair<int64_t, int64_t> micro_batch_positions(const BatchLayout& layout, int64_t step,
                                                  int64_t micro);

// Maps stream positions to (global sample index, epoch): position p is sample
// epoch_order(n, seed, p / n)[p % n] of epoch p / n. Keeps the orders of the two most recently
// used epochs. Not thread-safe (one per consumer).
class SampleStream {
 public:
  SampleStream(int64_t num_samples, uint64_t seed, OrderOptions order = {});
  // Fills index[i] and epoch[i] for positions begin + i, i < end - begin.
  void lookup(int64_t begin, int64_t end, int64_t* index, int64_t* epoch);
  int64_t num_samples() const { return n_; }

 private:
  const std::vector<int64_t>& order(int64_t epoch);
  int64_t n_;
  uint64_t seed_;
  OrderOptions options_;
  std::map<int64_t, std::vector<int64_t>> orders_;
};

}  // namespace lf::data
