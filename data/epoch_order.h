// The global sample order of an epoch: a pure function of (dataset size, seed, epoch, order
// options) — never of the rank, world size or batch layout (docs/design.md, invariant 1). Randomness
// comes from the scalar Philox4x32-10 (core/util/philox.h) keyed by the seed; the shuffle is
// our own Fisher–Yates, since std::shuffle's algorithm is implementation-defined.
#pragma once
#include <cstdint>
#include <vector>

namespace lf::data {

struct OrderOptions {
  bool shuffle = true;        // false: the identity order 0..n-1 every epoch (evaluation)
  int64_t block_size = 1;     // 1: shuffle samples; > 1: shuffle blocks of consecutive samples
  int64_t window_blocks = 8;  // with block_size > 1: then shuffle within windows of this many
                              // blocks, so nearby positions read from a few contiguous runs
  // Throws std::invalid_argument naming the field.
  void validate() const;
};

// The order of epoch `epoch`: a permutation of 0..n-1. Blockwise (block_size = K > 1): the
// blocks [bK, (b+1)K) are shuffled, concatenated, and the samples of each run of
// window_blocks consecutive blocks (a window) are shuffled again — a pure function still, with
// I/O locality: each window is the union of window_blocks whole blocks. Blocks
// do not care about shard boundaries (choose K dividing the shard size for the best locality).
// Cost O(n) time and memory. Throws std::invalid_argument for n < 1 or epoch < 0.
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch,
                                 const OrderOptions& options = {});

// A uniform integer in [0, bound) from the Philox block at counter (a, b, c, stream) under key
// seed, by Lemire's multiply-shift ("Fast Random Integer Generation in an Interval", ACM TOMACS
// 2019) on 64 random bits; the bias (at most bound / 2^64) is far below anything observable.
uint64_t keyed_below(uint64_t seed, uint32_t stream, uint64_t a, uint32_t b, uint32_t c,
                     uint64_t bound);

}  // namespace lf::data
