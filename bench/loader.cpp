// Loader benchmark: samples/s and bytes/s reading a Fashion-MNIST-sized latent cache (60000 x
// {mean, logvar} x 4x8x8 f16) in shuffled order through the real LatentLoader (prefetch on;
// streaming with a per-sample shuffle, streaming with a blockwise shuffle, in-memory), against
// the baseline of reading the same shard files raw (read(2) from the page cache) in the same
// run. Prints a table of medians over the repeats and the ratio to raw.
//
// Usage: bench_loader [--samples N] [--repeats R] [--batch B] [--dir DIR] [--keep]
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "core/util/strings.h"
#include "data/encode.h"
#include "data/latent_cache.h"
#include "data/latent_loader.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// A source of n blank 1x32x32 images (the encoder below ignores pixels).
class BlankSource : public lf::data::Source {
 public:
  explicit BlankSource(int64_t n) {
    size_ = n;
    channels_ = 1;
    height_ = width_ = 32;
    for (int i = 0; i < 10; ++i) label_names_.push_back(std::to_string(i));
  }
  nlohmann::json description() const override { return {{"kind", "bench-blank"}, {"n", size_}}; }
  lf::data::SourceBatch get(int64_t b, int64_t e) const override {
    check_range(b, e);
    lf::data::SourceBatch out;
    out.images = at::zeros({e - b, 1, 32, 32});
    out.labels = at::arange(b, e, at::kLong) % 10;
    return out;
  }
};

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// Reads every shard file with read(2) into one reusable buffer; returns bytes read.
int64_t read_raw(const std::vector<std::string>& files, std::vector<char>& buf) {
  int64_t total = 0;
  for (const auto& f : files) {
    int fd = ::open(f.c_str(), O_RDONLY);
    if (fd < 0) throw std::runtime_error(f + ": cannot open");
    ssize_t n;
    while ((n = ::read(fd, buf.data(), buf.size())) > 0) total += n;
    ::close(fd);
  }
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t samples = 60000, repeats = 5, batch = 256;
  std::string dir = (fs::temp_directory_path() / "lf-bench-loader").string();
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--samples") samples = std::stoll(next());
    else if (a == "--repeats") repeats = std::stoll(next());
    else if (a == "--batch") batch = std::stoll(next());
    else if (a == "--dir") dir = next();
    else if (a == "--keep") keep = true;
    else {
      std::fprintf(stderr, "usage: %s [--samples N] [--repeats R] [--batch B] [--dir DIR] [--keep]\n",
                   argv[0]);
      return 2;
    }
  }

  // ---- the cache (made once; reused when --dir holds a matching one) ----
  lf::data::EncodeOptions eo;
  eo.cache_dir = dir;
  eo.shard_size = 10000;
  eo.vae_hash = std::string(64, '0');
  eo.progress = false;
  eo.batch_size = 2000;
  BlankSource src(samples);
  auto t0 = Clock::now();
  lf::data::encode_shards(
      src,
      [](const at::Tensor& im, const at::Tensor& idx, bool) {
        // Deterministic pseudo-latents (not zeros: keep the bytes realistic).
        at::Tensor k = idx.to(at::kFloat).view({-1, 1, 1, 1});
        at::Tensor g = at::arange(256, at::kFloat).view({1, 4, 8, 8});
        at::Tensor mean = at::sin(k * 0.013 + g * 0.7);
        return lf::data::EncodedBatch{mean, mean * 0.1 - 2.0, {}};
      },
      eo, 0, 1);
  lf::data::finalize_cache(dir, eo);
  const double make_s = seconds_since(t0);
  auto cache = lf::data::LatentCache::open(dir, /*verify=*/true);
  std::vector<std::string> files;
  int64_t file_bytes = 0;
  for (const auto& s : cache->manifest().shards) {
    files.push_back((fs::path(dir) / s.file).string());
    file_bytes += static_cast<int64_t>(fs::file_size(files.back()));
  }
  const int64_t sample_bytes = cache->sample_bytes();  // stored latent bytes per sample
  const int64_t steps = samples / batch;                // one epoch
  std::printf("cache: %lld samples x %lld B latents (mean+logvar 4x8x8 f16) in %zu shards, %s "
              "on disk; made in %.1f s\n",
              static_cast<long long>(samples), static_cast<long long>(sample_bytes), files.size(),
              lf::human_bytes(static_cast<double>(file_bytes)).c_str(), make_s);
  std::printf("loader: batch %lld, %lld steps per epoch, %lld repeats, prefetch 4\n\n",
              static_cast<long long>(batch), static_cast<long long>(steps),
              static_cast<long long>(repeats));

  struct Mode {
    const char* name;
    bool in_memory;
    int64_t block, threads;
  };
  const std::vector<Mode> modes = {{"streaming, per-sample shuffle", false, 1, 1},
                                   {"streaming, blockwise shuffle (64 x 8)", false, 64, 1},
                                   {"streaming, per-sample, 2 read threads", false, 1, 2},
                                   {"in-memory, per-sample shuffle", true, 1, 1},
                                   {"in-memory, per-sample, 2 read threads", true, 1, 2}};
  std::vector<char> buf(8 << 20);
  read_raw(files, buf);  // warm the page cache

  std::vector<double> raw_s, load_s;
  std::vector<std::vector<double>> mode_s(modes.size());
  int64_t checksum = 0;
  for (int64_t r = 0; r < repeats; ++r) {
    // Interleave baseline and loader runs so drift on a shared machine hits both alike.
    auto t = Clock::now();
    int64_t got = read_raw(files, buf);
    raw_s.push_back(seconds_since(t));
    if (got != file_bytes) throw std::runtime_error("short raw read");
    for (size_t m = 0; m < modes.size(); ++m) {
      lf::data::LoaderOptions o;
      o.layout = {batch, 1, 0, 1};
      o.seed = 1234 + r;
      o.in_memory = modes[m].in_memory;
      o.order.block_size = modes[m].block;
      o.order.window_blocks = 8;
      o.prefetch_steps = 4;
      o.read_threads = modes[m].threads;
      t = Clock::now();
      lf::data::LatentLoader loader(cache, o);
      if (modes[m].in_memory) load_s.push_back(seconds_since(t));
      // Epoch 0 warms up (in-memory: after loading); epoch 1 is timed: steady state.
      for (int64_t k = 0; k < 2 * steps; ++k) {
        if (k == steps) t = Clock::now();
        lf::data::LoaderStep st = loader.next();
        checksum += *st.micro[0].indices.data_ptr<int64_t>();
      }
      mode_s[m].push_back(seconds_since(t));
    }
  }

  const double raw = median(raw_s);
  const double raw_bps = static_cast<double>(file_bytes) / raw;
  const double loaded = static_cast<double>(steps * batch);
  std::printf("| %-38s | %12s | %12s | %8s |\n", "reader", "samples/s", "bytes/s", "vs raw");
  std::printf("|%s|%s|%s|%s|\n", std::string(40, '-').c_str(), std::string(14, '-').c_str(),
              std::string(14, '-').c_str(), std::string(10, '-').c_str());
  std::printf("| %-38s | %12.0f | %10s/s | %7.0f%% |\n", "raw read(2) of the shard files",
              static_cast<double>(samples) / raw, lf::human_bytes(raw_bps).c_str(), 100.0);
  for (size_t m = 0; m < modes.size(); ++m) {
    const double s = median(mode_s[m]);
    const double bps = loaded * static_cast<double>(sample_bytes) / s;
    std::printf("| %-38s | %12.0f | %10s/s | %7.0f%% |\n", modes[m].name, loaded / s,
                lf::human_bytes(bps).c_str(), 100.0 * bps / raw_bps);
  }
  std::printf("\nbytes/s counts stored latent bytes delivered (%lld B per sample; the loader "
              "hands them out as float32, twice that); the raw row counts whole files. Loader "
              "rows time the second epoch (steady state); loading the cache for in-memory mode "
              "took %.1f ms more (median). Medians of %lld repeats. (checksum %lld)\n",
              static_cast<long long>(sample_bytes), 1e3 * median(load_s),
              static_cast<long long>(repeats), static_cast<long long>(checksum));
  if (!keep) fs::remove_all(dir);
  return 0;
}
