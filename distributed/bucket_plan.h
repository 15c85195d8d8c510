// The bucket plan of gradient sync: which parameters' gradients travel together in one flat
// buffer, and where each sits in it. A pure function of the parameters' (dtype, device,
// shape) in registration order, so every rank computes the same plan; its hash is checked
// across ranks at start-up.
//
// Protocol (shared with reducer.cpp): parameters are taken in REVERSE registration order,
// because backward produces gradients roughly from the last layer to the first; each
// (dtype, device) pair fills its own open bucket until it reaches the byte cap; a parameter
// larger than the cap gets a bucket of its own; buckets are then numbered by their first
// parameter in that reverse order, which is the order the Reducer launches them in.
// Matches c10d's compute_bucket_assignment_by_size (torch/csrc/distributed/c10d/reducer.cpp)
// with one size limit, and Horovod's fusion buffer grouping by dtype and device.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace lf::dist {

struct ParamSpec {
  torch::ScalarType dtype = torch::kFloat;
  torch::Device device = torch::kCPU;
  std::vector<int64_t> shape;

  int64_t numel() const;
  static ParamSpec of(const torch::Tensor& tensor);
};

struct Bucket {
  torch::ScalarType dtype = torch::kFloat;
  torch::Device device = torch::kCPU;
  std::vector<int64_t> params;   // parameter indices, in the order they sit in the buffer
  std::vector<int64_t> offsets;  // element offset of each in the flat buffer
  int64_t numel = 0;
  int64_t bytes() const;
};

struct BucketPlan {
  std::vector<Bucket> buckets;
  std::vector<std::pair<int64_t, int64_t>> location;  // param -> (bucket, slot in bucket)

  // 64 bits of SHA-256 over every bucket's dtype, device, parameters, offsets and sizes.
  uint64_t hash() const;
  // One line per bucket: "bucket 1/3: f32 cpu, 4 params, 12.5 MB".
  std::string describe() const;
};

// Plans buckets of at most `cap_bytes` (a lone larger parameter excepted). Throws
// std::invalid_argument when cap_bytes <= 0. Pure and cheap; call at start-up.
BucketPlan plan_buckets(const std::vector<ParamSpec>& params, int64_t cap_bytes);

// 64 bits of SHA-256 over every parameter's dtype, device and shape in registration order.
uint64_t shapes_hash(const std::vector<ParamSpec>& params);

}  // namespace lf::dist
