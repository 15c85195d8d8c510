// The training loader: turns the sample stream (sample_stream.h) into ready batches of cached
// latents for this rank, prefetched by a background thread into a bounded queue. Streaming
// mode reads only the rows it needs, a read-ahead group of steps at a time (sorted by shard
// and row, in large contiguous runs); in-memory mode loads every shard once.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <ATen/ATen.h>

#include "data/epoch_order.h"
#include "data/latent_cache.h"
#include "data/sample_stream.h"

namespace lf::data {

// The float32 bytes of one read group when LoaderOptions::read_ahead_samples is 0 (auto).
// Memory held by the loader stays below about (4 recycled + 2 in use) groups.
constexpr int64_t kReadAheadBytes = int64_t{32} << 20;

struct LoaderOptions {
  BatchLayout layout;               // global batch, world, rank, accumulation
  uint64_t seed = 0;                // the run's seed (the order is keyed by it and the epoch)
  OrderOptions order;               // shuffle and block/window locality
  int64_t start_step = 0;           // first step delivered (resume: the checkpoint's step)
  bool in_memory = false;           // load the whole cache once (it must fit in RAM)
  int64_t prefetch_steps = 4;       // ready steps kept ahead; 0 = no thread, read in next()
  int64_t read_ahead_samples = 0;   // samples per read group (rounded to whole steps, >= 1);
                                    // 0 = auto: as many as fit in kReadAheadBytes as float32
  int64_t gap_bytes = 256 << 10;    // streaming: row gaps up to this are read, not skipped
  int64_t read_threads = 1;         // threads copying/converting a read group (beside training)
  void validate() const;            // throws std::invalid_argument naming the field
};

// One micro-batch. Latent tensors are float32 [n, c, h, w]; those the cache does not store
// are undefined (moments: mean, logvar [+ mean_flip, logvar_flip]; sample: latent [+
// latent_flip]). All tensors are contiguous CPU views into the buffer of their read group
// (shared with neighbouring steps): treat them as read-only; clone() before writing in place.
struct LatentBatch {
  at::Tensor mean, logvar, latent, mean_flip, logvar_flip, latent_flip;
  at::Tensor labels;   // int64 [n]
  at::Tensor indices;  // int64 [n], global sample indices
  at::Tensor epochs;   // int64 [n], the epoch each sample belongs to (a batch may span two)
  at::Tensor tokens;   // int32 [n, context_length] for a captioned cache, else undefined
  // float32 [n, L, D] and uint8 [n, L] for a cache with external caption embeddings
  at::Tensor text_embedding, text_mask;
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
};

struct LoaderStep {
  int64_t step = 0;
  std::vector<LatentBatch> micro;  // layout.accum micro-batches, in order
};

class LatentLoader {
 public:
  // Starts the prefetch thread (unless prefetch_steps == 0). In-memory mode reads the whole
  // cache here (blocks). Throws std::invalid_argument for bad options.
  LatentLoader(std::shared_ptr<const LatentCache> cache, LoaderOptions options);
  ~LatentLoader();  // stops and joins the thread
  LatentLoader(const LatentLoader&) = delete;
  LatentLoader& operator=(const LatentLoader&) = delete;

  // The next step's micro-batches (steps start_step, start_step+1, ...). Blocks until ready;
  // rethrows an error the prefetch thread hit (e.g. a damaged shard).
  LoaderStep next();

  // Steps per epoch (n / B, fractional). Epoch of step k's first sample: floor(k·B / n).
  double steps_per_epoch() const;

 private:
  // The rows of a read group: steps [first, first+count), read with one cache read.
  struct Group {
    int64_t first = 0, count = 0;
    int64_t capacity = 0;  // rows the buffers hold
    LatentRows rows;
    at::Tensor epochs;
  };
  void produce_loop();
  Group read_group(int64_t first, int64_t count);
  // Buffers for a group of `total` rows: a recycled set whose tensors nobody references any
  // more (the consumer dropped every batch viewing them), else a new one. Recycling avoids
  // faulting in fresh pages for every group.
  Group acquire(int64_t total);
  LoaderStep make_step(const Group& g, int64_t step) const;
  int64_t group_steps() const;

  std::shared_ptr<const LatentCache> cache_;
  LoaderOptions opt_;
  SampleStream stream_;
  std::vector<std::string> names_;
  LatentRows all_;  // in-memory mode: every row, stored dtype
  std::vector<Group> pool_;  // recycled group buffers (producer side only)
  Group sync_group_;  // prefetch_steps == 0: the group next() serves from
  int64_t next_step_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<LoaderStep> queue_;
  std::exception_ptr error_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace lf::data
