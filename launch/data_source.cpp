// Configured image sources (see data_source.h).
#include "launch/data_source.h"

#include "core/util/strings.h"

namespace lf::launch {

namespace {

// The first `limit` samples of another source.
class PrefixSource : public data::Source {
 public:
  PrefixSource(std::unique_ptr<data::Source> inner, int64_t limit) : inner_(std::move(inner)) {
    size_ = std::min(limit, inner_->size());
    channels_ = inner_->channels();
    height_ = inner_->height();
    width_ = inner_->width();
    label_names_ = inner_->label_names();
    skipped_ = inner_->skipped();
    captioned_ = inner_->captioned();
    limit_ = limit;
  }
  nlohmann::json description() const override {
    nlohmann::json d = inner_->description();
    d["limit"] = limit_;
    return d;
  }
  data::SourceBatch get(int64_t begin, int64_t end) const override {
    check_range(begin, end);
    return inner_->get(begin, end);
  }

 private:
  std::unique_ptr<data::Source> inner_;
  int64_t limit_ = 0;
};

}  // namespace

data::SourceOptions source_options(const DataConfig& d) {
  data::SourceOptions o;
  o.path = d.source;
  o.split = d.split;
  o.resolution = d.image_size;
  o.channels = d.color == "gray" ? 1 : d.color == "rgb" ? 3 : 0;
  o.skip_bad = d.skip_bad;
  o.max_pixels = d.max_pixels;
  o.max_aspect = d.max_aspect;
  o.background = d.background;
  return o;
}

std::unique_ptr<data::Source> open_configured_source(const DataConfig& d, const std::string& split) {
  data::SourceOptions o = source_options(d);
  if (!split.empty()) o.split = split;
  if (o.split == "test" && !d.test_source.empty()) o.path = d.test_source;
  auto source = data::open_source(o);
  if (d.limit > 0 && d.limit < source->size()) return std::make_unique<PrefixSource>(std::move(source), d.limit);
  return source;
}

}  // namespace lf::launch
