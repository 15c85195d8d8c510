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
      next_build_(opt_.start_step) {
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

std::vector<LoaderStep> LatentLoader::build(int64_t first, int64_t count) {
  const BatchLayout& L = opt_.layout;
  const int64_t per_rank = L.per_rank(), micro = L.micro_size();
  // This rank's positions of each step are contiguous ([step·B + r·B/W, + B/W)), and its
  // micro-batches tile them in order.
  const int64_t total = count * per_rank;
  std::vector<int64_t> index(static_cast<size_t>(total)), epoch(static_cast<size_t>(total));
  for (int64_t s = 0; s < count; ++s) {
    auto [b, e] = micro_batch_positions(L, first + s, 0);
    (void)e;
    stream_.lookup(b, b + per_rank, index.data() + s * per_rank, epoch.data() + s * per_rank);
  }
  at::Tensor epochs = at::from_blob(epoch.data(), {total}, at::kLong).clone();
  LatentRows rows;
  if (opt_.in_memory) {
    at::Tensor idx = at::from_blob(index.data(), {total}, at::kLong);
    for (const auto& n : names_) rows.latents[n] = all_.latents.at(n).index_select(0, idx);
    rows.labels = all_.labels.index_select(0, idx);
    rows.indices = all_.indices.index_select(0, idx);
  } else {
    rows = cache_->read(index, /*as_float=*/false, opt_.gap_bytes);
  }
  std::vector<LoaderStep> steps(static_cast<size_t>(count));
  for (int64_t s = 0; s < count; ++s) {
    LoaderStep& st = steps[static_cast<size_t>(s)];
    st.step = first + s;
    for (int64_t a = 0; a < L.accum; ++a) {
      const int64_t off = s * per_rank + a * micro;
      LatentBatch mb;
      auto take = [&](const std::string& name) -> at::Tensor {
        auto it = rows.latents.find(name);
        if (it == rows.latents.end()) return {};
        return it->second.narrow(0, off, micro).to(at::kFloat).contiguous();
      };
      mb.mean = take("mean");
      mb.logvar = take("logvar");
      mb.latent = take("latent");
      mb.mean_flip = take("mean_flip");
      mb.logvar_flip = take("logvar_flip");
      mb.latent_flip = take("latent_flip");
      mb.labels = rows.labels.narrow(0, off, micro).clone();
      mb.indices = rows.indices.narrow(0, off, micro).clone();
      mb.epochs = epochs.narrow(0, off, micro).clone();
      st.micro.push_back(std::move(mb));
    }
  }
  return steps;
}

void LatentLoader::produce_loop() {
  const int64_t group =
      std::max<int64_t>(1, opt_.read_ahead_samples / opt_.layout.per_rank());
  try {
    for (int64_t step = opt_.start_step;; step += group) {
      std::vector<LoaderStep> steps = build(step, group);
      for (auto& st : steps) {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] {
          return stop_ || static_cast<int64_t>(queue_.size()) < opt_.prefetch_steps;
        });
        if (stop_) return;
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
    if (queue_.empty()) {
      const int64_t group = std::max<int64_t>(1, opt_.read_ahead_samples / opt_.layout.per_rank());
      for (auto& st : build(next_build_, group)) queue_.push_back(std::move(st));
      next_build_ += group;
    }
    LoaderStep st = std::move(queue_.front());
    queue_.pop_front();
    return st;
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
