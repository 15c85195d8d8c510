// The prefetching latent loader (see latent_loader.h).
#include "data/latent_loader.h"

#include <stdexcept>

#include "core/util/strings.h"

namespace lf::data {

void LoaderOptions::validate() const {
  layout.validate();
  order.validate();
  if (start_step < 0)
    throw std::invalid_argument(lf::str("loader start step ", start_step, " < 0"));
  if (prefetch_steps < 0 || prefetch_steps > 1024)
    throw std::invalid_argument(lf::str("data.prefetch is ", prefetch_steps, ", expected 0..1024"));
  if (read_ahead_samples < 1)
    throw std::invalid_argument(
        lf::str("data.read_ahead is ", read_ahead_samples, ", expected >= 1"));
  if (gap_bytes < 0) throw std::invalid_argument(lf::str("loader gap_bytes ", gap_bytes, " < 0"));
}

LatentLoader::LatentLoader(std::shared_ptr<const LatentCache> cache, LoaderOptions options)
    : cache_(std::move(cache)),
      opt_((options.validate(), options)),
      stream_(cache_->size(), opt_.seed, opt_.order),
      next_step_(opt_.start_step) {
  const auto& s = cache_->manifest().settings;
  names_ = latent_dataset_names(s.store, s.flip);
  if (opt_.in_memory) all_ = cache_->read_all(/*as_float=*/false);
  if (opt_.prefetch_steps > 0) thread_ = std::thread([this] { produce_loop(); });
}

LatentLoader::~LatentLoader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

double LatentLoader::steps_per_epoch() const {
  return static_cast<double>(cache_->size()) / static_cast<double>(opt_.layout.global_batch);
}

int64_t LatentLoader::group_steps() const {
  return std::max<int64_t>(1, opt_.read_ahead_samples / opt_.layout.per_rank());
}

LatentLoader::Group LatentLoader::read_group(int64_t first, int64_t count) {
  const BatchLayout& L = opt_.layout;
  const int64_t per_rank = L.per_rank();
  // This rank's positions of each step are contiguous ([step·B + r·B/W, + B/W)), and its
  // micro-batches tile them in order.
  const int64_t total = count * per_rank;
  std::vector<int64_t> index(static_cast<size_t>(total)), epoch(static_cast<size_t>(total));
  for (int64_t s = 0; s < count; ++s) {
    const int64_t b = micro_batch_positions(L, first + s, 0).first;
    stream_.lookup(b, b + per_rank, index.data() + s * per_rank, epoch.data() + s * per_rank);
  }
  Group g;
  g.first = first;
  g.count = count;
  g.epochs = at::from_blob(epoch.data(), {total}, at::kLong).clone();
  if (opt_.in_memory) {
    at::Tensor idx = at::from_blob(index.data(), {total}, at::kLong);
    for (const auto& n : names_) g.rows.latents[n] = all_.latents.at(n).index_select(0, idx);
    g.rows.labels = all_.labels.index_select(0, idx);
    g.rows.indices = all_.indices.index_select(0, idx);
  } else {
    g.rows = cache_->read(index, /*as_float=*/false, opt_.gap_bytes);
  }
  return g;
}

LoaderStep LatentLoader::make_step(const Group& g, int64_t step) const {
  const BatchLayout& L = opt_.layout;
  const int64_t s = step - g.first, micro = L.micro_size();
  LoaderStep st;
  st.step = step;
  for (int64_t a = 0; a < L.accum; ++a) {
    const int64_t off = s * L.per_rank() + a * micro;
    LatentBatch mb;
    auto take = [&](const char* name) -> at::Tensor {
      auto it = g.rows.latents.find(name);
      if (it == g.rows.latents.end()) return {};
      return it->second.narrow(0, off, micro).to(at::kFloat).contiguous();
    };
    mb.mean = take("mean");
    mb.logvar = take("logvar");
    mb.latent = take("latent");
    mb.mean_flip = take("mean_flip");
    mb.logvar_flip = take("logvar_flip");
    mb.latent_flip = take("latent_flip");
    mb.labels = g.rows.labels.narrow(0, off, micro).clone();
    mb.indices = g.rows.indices.narrow(0, off, micro).clone();
    mb.epochs = g.epochs.narrow(0, off, micro).clone();
    st.micro.push_back(std::move(mb));
  }
  return st;
}

void LatentLoader::produce_loop() {
  try {
    for (int64_t first = opt_.start_step;; first += group_steps()) {
      Group g = read_group(first, group_steps());
      for (int64_t step = first; step < first + g.count; ++step) {
        {
          // Wait for room before building, so at most prefetch_steps steps are materialised.
          std::unique_lock<std::mutex> lock(mu_);
          cv_.wait(lock, [&] {
            return stop_ || static_cast<int64_t>(queue_.size()) < opt_.prefetch_steps;
          });
          if (stop_) return;
        }
        LoaderStep st = make_step(g, step);
        std::lock_guard<std::mutex> lock(mu_);
        queue_.push_back(std::move(st));
        cv_.notify_all();
      }
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = std::current_exception();
    cv_.notify_all();
  }
}

LoaderStep LatentLoader::next() {
  if (opt_.prefetch_steps == 0) {
    if (sync_group_.count == 0 || next_step_ >= sync_group_.first + sync_group_.count)
      sync_group_ = read_group(next_step_, group_steps());
    return make_step(sync_group_, next_step_++);
  }
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !queue_.empty() || error_; });
  if (queue_.empty()) std::rethrow_exception(error_);
  LoaderStep st = std::move(queue_.front());
  queue_.pop_front();
  cv_.notify_all();
  return st;
}

}  // namespace lf::data
