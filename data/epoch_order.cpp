// Epoch orders (see epoch_order.h).
#include "data/epoch_order.h"

#include <numeric>
#include <stdexcept>

#include "core/util/philox.h"
#include "core/util/strings.h"

namespace lf::data {

namespace {

// Streams keep the block and window shuffles independent of each other and of every other
// user of Philox under the same seed (core/'s keyed RNG uses small stream numbers).
constexpr uint32_t kStreamBlocks = 0x0D1A0001u;
constexpr uint32_t kStreamWindow = 0x0D1A0002u;

// Durstenfeld's Fisher–Yates (Knuth, TAOCP vol. 2, Algorithm 3.4.2P): for j = m-1 .. 1 swap
// a[j] with a[k], k uniform in [0, j]. `draw(j, bound)` supplies k.
template <class Draw>
void fisher_yates(int64_t* a, int64_t m, Draw draw) {
  for (int64_t j = m - 1; j > 0; --j) {
    int64_t k = static_cast<int64_t>(draw(j, static_cast<uint64_t>(j) + 1));
    std::swap(a[j], a[k]);
  }
}

}  // namespace

void OrderOptions::validate() const {
  if (block_size < 1)
    throw std::invalid_argument(lf::str("order block size is ", block_size, ", expected >= 1"));
  if (window_blocks < 1)
    throw std::invalid_argument(
        lf::str("order window is ", window_blocks, " blocks, expected >= 1"));
  if (block_size * window_blocks > (int64_t{1} << 32))
    throw std::invalid_argument(lf::str("order block size * window = ",
                                        block_size * window_blocks, " exceeds 2^32"));
}

uint64_t keyed_below(uint64_t seed, uint32_t stream, uint64_t a, uint32_t b, uint32_t c,
                     uint64_t bound) {
  Philox4 out = philox4x32_10({static_cast<uint32_t>(a), static_cast<uint32_t>(a >> 32) ^ b, c,
                               stream},
                              {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)});
  const uint64_t r = (static_cast<uint64_t>(out[0]) << 32) | out[1];
  return static_cast<uint64_t>((static_cast<unsigned __int128>(r) * bound) >> 64);
}

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch,
                                 const OrderOptions& options) {
  options.validate();
  if (n < 1) throw std::invalid_argument(lf::str("epoch_order: dataset size ", n, " < 1"));
  if (epoch < 0 || epoch > 0xFFFFFFFFll)
    throw std::invalid_argument(lf::str("epoch_order: epoch ", epoch, " outside 0..2^32-1"));
  const uint32_t ep = static_cast<uint32_t>(epoch);
  std::vector<int64_t> order(static_cast<size_t>(n));
  if (!options.shuffle) {
    std::iota(order.begin(), order.end(), 0);
    return order;
  }
  const int64_t k = options.block_size;
  if (k == 1) {
    std::iota(order.begin(), order.end(), 0);
    fisher_yates(order.data(), n, [&](int64_t j, uint64_t bound) {
      return keyed_below(seed, kStreamBlocks, static_cast<uint64_t>(j), 0, ep, bound);
    });
    return order;
  }
  const int64_t blocks = (n + k - 1) / k;
  std::vector<int64_t> perm(static_cast<size_t>(blocks));
  std::iota(perm.begin(), perm.end(), 0);
  fisher_yates(perm.data(), blocks, [&](int64_t j, uint64_t bound) {
    return keyed_below(seed, kStreamBlocks, static_cast<uint64_t>(j), 0, ep, bound);
  });
  // Concatenate the shuffled blocks; window w is the blocks at permutation positions
  // [w·window_blocks, (w+1)·window_blocks), so a short last block never shifts the windows.
  const int64_t wb = options.window_blocks;
  size_t pos = 0;
  for (int64_t w = 0; w * wb < blocks; ++w) {
    const size_t begin = pos;
    for (int64_t q = w * wb; q < std::min(blocks, (w + 1) * wb); ++q) {
      const int64_t b = perm[static_cast<size_t>(q)];
      for (int64_t i = b * k; i < std::min(n, (b + 1) * k); ++i) order[pos++] = i;
    }
    fisher_yates(order.data() + begin, static_cast<int64_t>(pos - begin),
                 [&](int64_t j, uint64_t bound) {
                   return keyed_below(seed, kStreamWindow, static_cast<uint64_t>(j),
                                      static_cast<uint32_t>(w), ep, bound);
                 });
  }
  return order;
}

}  // namespace lf::data
