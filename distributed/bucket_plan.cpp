// plan_buckets: reverse-order, per-(dtype, device), size-capped gradient buckets.
#include "distributed/bucket_plan.h"

#include <map>
#include <sstream>
#include <stdexcept>

#include "core/util/sha256.h"
#include "core/util/strings.h"

namespace lf::dist {
namespace {

uint64_t first_64_bits(const std::string& hex) { return std::stoull(hex.substr(0, 16), nullptr, 16); }

void hash_i64(Sha256& h, int64_t v) { h.update(&v, sizeof(v)); }

void hash_key(Sha256& h, torch::ScalarType dtype, const torch::Device& device) {
  h.update(lf::str(c10::toString(dtype), "@", device.str(), ";"));
}

}  // namespace

int64_t ParamSpec::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

ParamSpec ParamSpec::of(const torch::Tensor& tensor) {
  return ParamSpec{tensor.scalar_type(), tensor.device(), tensor.sizes().vec()};
}

int64_t Bucket::bytes() const {
  return numel * static_cast<int64_t>(c10::elementSize(dtype));
}

BucketPlan plan_buckets(const std::vector<ParamSpec>& params, int64_t cap_bytes) {
  if (cap_bytes <= 0)
    throw std::invalid_argument(lf::str("bucket cap must be positive, got ", cap_bytes, " bytes"));
  BucketPlan plan;
  plan.location.assign(params.size(), {-1, -1});
  // Open buckets per (dtype, device); closed ones keep the position of their first parameter
  // so they can be numbered in launch order.
  std::map<std::string, Bucket> open;
  std::vector<std::pair<size_t, Bucket>> closed;  // (rank of first param in reverse order, bucket)
  std::map<std::string, size_t> open_first;
  size_t position = 0;
  for (int64_t i = static_cast<int64_t>(params.size()) - 1; i >= 0; --i, ++position) {
    const ParamSpec& p = params[static_cast<size_t>(i)];
    const std::string key = lf::str(c10::toString(p.dtype), "@", p.device.str());
    auto it = open.find(key);
    if (it == open.end()) {
      Bucket b;
      b.dtype = p.dtype;
      b.device = p.device;
      it = open.emplace(key, b).first;
      open_first[key] = position;
    }
    Bucket& b = it->second;
    b.params.push_back(i);
    b.offsets.push_back(b.numel);
    b.numel += p.numel();
    if (b.bytes() >= cap_bytes) {
      closed.emplace_back(open_first[key], std::move(b));
      open.erase(it);
      open_first.erase(key);
    }
  }
  for (auto& [key, b] : open) closed.emplace_back(open_first[key], std::move(b));
  std::sort(closed.begin(), closed.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [first, b] : closed) {
    const int64_t index = static_cast<int64_t>(plan.buckets.size());
    for (size_t s = 0; s < b.params.size(); ++s)
      plan.location[static_cast<size_t>(b.params[s])] = {index, static_cast<int64_t>(s)};
    plan.buckets.push_back(std::move(b));
  }
  return plan;
}

uint64_t BucketPlan::hash() const {
  Sha256 h;
  hash_i64(h, static_cast<int64_t>(buckets.size()));
  for (const Bucket& b : buckets) {
    hash_key(h, b.dtype, b.device);
    hash_i64(h, b.numel);
    for (size_t s = 0; s < b.params.size(); ++s) {
      hash_i64(h, b.params[s]);
      hash_i64(h, b.offsets[s]);
    }
  }
  return first_64_bits(h.hex());
}

std::string BucketPlan::describe() const {
  std::ostringstream os;
  for (size_t i = 0; i < buckets.size(); ++i) {
    const Bucket& b = buckets[i];
    os << "bucket " << i + 1 << "/" << buckets.size() << ": " << c10::toString(b.dtype) << " "
       << b.device.str() << ", " << b.params.size() << " params, "
       << human_bytes(static_cast<double>(b.bytes())) << "\n";
  }
  return os.str();
}

uint64_t shapes_hash(const std::vector<ParamSpec>& params) {
  Sha256 h;
  hash_i64(h, static_cast<int64_t>(params.size()));
  for (const ParamSpec& p : params) {
    hash_key(h, p.dtype, p.device);
    hash_i64(h, static_cast<int64_t>(p.shape.size()));
    for (int64_t d : p.shape) hash_i64(h, d);
  }
  return first_64_bits(h.hex());
}

}  // namespace lf::dist
