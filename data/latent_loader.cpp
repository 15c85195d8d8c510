// The prefetching latent loader (see latent_loader.h).
#include "data/latent_loader.h"

#include <cstring>
#include <stdexcept>

#include "core/util/strings.h"
#include "data/half_convert.h"

namespace lf::data {

namespace {

// dst[q] = src[idx[q]] row by row, converting f16 rows to float32 (dst is float32).
void gather_rows(const at::Tensor& src, const std::vector<int64_t>& idx, at::Tensor& dst) {
  const int64_t elems = src[0].numel();
  if (src.scalar_type() == at::kHalf) {  // into float32
    const auto* in = reinterpret_cast<const uint16_t*>(src.data_ptr());
    float* out = dst.data_ptr<float>();
    for (size_t q = 0; q < idx.size(); ++q)
      half_to_float(in + idx[q] * elems, out + static_cast<int64_t>(q) * elems, elems);
  } else {  // same dtype: float32 latents, int32 tokens
    const int64_t row = elems * static_cast<int64_t>(src.element_size());
    const char* in = static_cast<const char*>(src.data_ptr());
    char* out = static_cast<char*>(dst.data_ptr());
    for (size_t q = 0; q < idx.size(); ++q)
      std::memcpy(out + static_cast<int64_t>(q) * row, in + idx[q] * row, static_cast<size_t>(row));
  }
}

bool unreferenced(const at::Tensor& t) { return !t.defined() || t.storage().use_count() == 1; }

}  // namespace

void LoaderOptions::validate() const {
  layout.validate();
  order.validate();
  if (start_step < 0)
    throw std::invalid_argument(lf::str("loader start step ", start_step, " < 0"));
  if (prefetch_steps < 0 || prefetch_steps > 1024)
    throw std::invalid_argument(lf::str("loader prefetch_steps is ", prefetch_steps, ", expected 0..1024"));
  if (read_ahead_samples < 0)
    throw std::invalid_argument(
        lf::str("loader read_ahead_samples is ", read_ahead_samples, ", expected >= 0 (0 = auto)"));
  if (gap_bytes < 0) throw std::invalid_argument(lf::str("loader gap_bytes ", gap_bytes, " < 0"));
  if (read_threads < 1 || read_threads > 256)
    throw std::invalid_argument(
        lf::str("loader read_threads is ", read_threads, ", expected 1..256"));
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
  int64_t samples = opt_.read_ahead_samples;
  if (samples == 0) {
    const auto& s = cache_->manifest().settings;
    const int64_t float_bytes = cache_->sample_bytes() / dtype_bytes(s.dtype) * 4;
    samples = kReadAheadBytes / std::max<int64_t>(float_bytes, 1);
  }
  return std::max<int64_t>(1, samples / opt_.layout.per_rank());
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
  Group g = acquire(total);
  g.first = first;
  g.count = count;
  std::memcpy(g.epochs.data_ptr<int64_t>(), epoch.data(), static_cast<size_t>(total) * 8);
  // Rows [b, e) of the group; independent ranges run on separate threads.
  auto fill = [&](int64_t b, int64_t e) {
    std::vector<int64_t> part(index.begin() + b, index.begin() + e);
    LatentRows out;
    for (const auto& kv : g.rows.latents) out.latents[kv.first] = kv.second.narrow(0, b, e - b);
    out.labels = g.rows.labels.narrow(0, b, e - b);
    out.indices = g.rows.indices.narrow(0, b, e - b);
    if (g.rows.tokens.defined()) out.tokens = g.rows.tokens.narrow(0, b, e - b);
    if (g.rows.text_embedding.defined()) {
      out.text_embedding = g.rows.text_embedding.narrow(0, b, e - b);
      out.text_mask = g.rows.text_mask.narrow(0, b, e - b);
    }
    if (opt_.in_memory) {
      for (const auto& n : names_) gather_rows(all_.latents.at(n), part, out.latents.at(n));
      const int64_t* lab = all_.labels.data_ptr<int64_t>();
      int64_t* gl = out.labels.data_ptr<int64_t>();
      int64_t* gi = out.indices.data_ptr<int64_t>();
      for (size_t q = 0; q < part.size(); ++q) {
        gl[q] = lab[part[q]];
        gi[q] = part[q];
      }
      if (out.tokens.defined()) gather_rows(all_.tokens, part, out.tokens);
      if (out.text_embedding.defined()) {
        gather_rows(all_.text_embedding, part, out.text_embedding);
        gather_rows(all_.text_mask, part, out.text_mask);
      }
    } else {
      cache_->read_into(part, out, opt_.gap_bytes);
    }
  };
  const int64_t threads = std::min<int64_t>(opt_.read_threads, std::max<int64_t>(1, total / 256));
  if (threads <= 1) {
    fill(0, total);
    return g;
  }
  std::vector<std::thread> workers;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
  for (int64_t t = 0; t < threads; ++t)
    workers.emplace_back([&, t] {
      try {
        fill(total * t / threads, total * (t + 1) / threads);
      } catch (...) {
        errors[static_cast<size_t>(t)] = std::current_exception();
      }
    });
  for (auto& w : workers) w.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  return g;
}

LatentLoader::Group LatentLoader::acquire(int64_t total) {
  for (auto& b : pool_) {
    bool free = b.capacity == total && unreferenced(b.epochs) && unreferenced(b.rows.labels) &&
                unreferenced(b.rows.indices) &&
                unreferenced(b.rows.tokens) && unreferenced(b.rows.text_embedding) &&
                unreferenced(b.rows.text_mask);
    for (const auto& kv : b.rows.latents) free = free && unreferenced(kv.second);
    if (free) return b;  // a copy sharing the storage: the pool keeps its reference
  }
  Group g;
  g.rows = cache_->allocate_rows(total, /*as_float=*/true);
  g.epochs = at::empty({total}, at::kLong);
  g.capacity = total;
  if (pool_.size() < 4) pool_.push_back(g);
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
      return it->second.narrow(0, off, micro);  // a contiguous view of the group's rows
    };
    mb.mean = take("mean");
    mb.logvar = take("logvar");
    mb.latent = take("latent");
    mb.mean_flip = take("mean_flip");
    mb.logvar_flip = take("logvar_flip");
    mb.latent_flip = take("latent_flip");
    mb.labels = g.rows.labels.narrow(0, off, micro);
    mb.indices = g.rows.indices.narrow(0, off, micro);
    mb.epochs = g.epochs.narrow(0, off, micro);
    if (g.rows.tokens.defined()) mb.tokens = g.rows.tokens.narrow(0, off, micro);
    if (g.rows.text_embedding.defined()) {
      mb.text_embedding = g.rows.text_embedding.narrow(0, off, micro);
      mb.text_mask = g.rows.text_mask.narrow(0, off, micro);
    }
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
