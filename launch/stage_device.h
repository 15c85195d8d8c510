// Where a pipeline stage (encode, sample, eval) runs its networks and how: the device (the
// local rank's GPU or the CPU), the precision policy shared with training (bf16 autocast on
// CUDA by default), pinned host memory for transfers, an upload stream so host-to-device
// copies overlap the compute of the batch before, and downloads that complete in the
// background. On the CPU every transfer is a no-op and every call is synchronous.
//
// Stream protocol (as torch.cuda's documented pattern for side streams): an upload runs on
// the stage's copy stream from pinned memory, records an event that the compute stream waits
// for, and marks the tensor as used on the compute stream (record_stream) so the caching
// allocator does not reuse it early. A download copies into pinned memory on the compute
// stream and records an event; HostResult::wait() blocks on that event alone, not on the work
// queued after it.
#pragma once
#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>
#include <torch/nn/module.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "launch/mixed_precision.h"

namespace lf::launch {

// Tensors on the host whose contents may still be arriving from the device.
struct HostResult {
  std::vector<at::Tensor> tensors;
  std::shared_ptr<c10::Event> ready;  // null when the tensors are final already
  // Blocks until the tensors hold their values (returns at once on the CPU).
  void wait() const;
};

class StageDevice {
 public:
  // `precision` from resolve_precision(value, device, key). Sets the autocast dtype.
  StageDevice(at::Device device, Precision precision);

  at::Device device() const { return device_; }
  bool is_cuda() const { return device_.is_cuda(); }
  Precision precision() const { return precision_; }
  // The dtype of parameters and float inputs: float64 under f64, float32 otherwise (autocast
  // lowers what it should inside the guard).
  at::ScalarType dtype() const { return precision_ == Precision::kF64 ? at::kDouble : at::kFloat; }
  // "cuda:0, bf16 autocast" / "cpu, f32", for logs.
  std::string describe() const;

  // Whether autocast() lowers precision (bf16/f16 on CUDA).
  bool autocasts() const { return is_cuda() && (precision_ == Precision::kBF16 || precision_ == Precision::kF16); }
  // Enables bf16/f16 autocast on CUDA until the guard goes (no-op otherwise).
  MixedPrecision::Guard autocast() const { return amp_.autocast(); }

  // Moves a module to dtype() and the device, in eval mode.
  void prepare(torch::nn::Module& module) const;

  // A host tensor on the device: floating tensors become dtype(), others keep theirs (upload
  // uint8 images and convert there: 4x fewer bytes). On CUDA through pinned memory and the
  // copy stream, ordered before any later work on the current stream. Returns immediately.
  at::Tensor upload(const at::Tensor& host) const;

  // Device tensors copied to (pinned) host memory in the background; wait() before reading.
  HostResult download(const std::vector<at::Tensor>& device_tensors) const;

  // A stage's batch loop with one batch in flight: while the device computes batch k, the host
  // loads and uploads batch k+1 and consumes the results of batch k-1. load(k) returns host
  // tensors (or an undefined tensor), compute(uploaded) returns device tensors, consume(k,
  // host tensors) sees batch k's results in order. Everything runs on the calling thread; on the
  // CPU it is the plain loop load, compute, consume. Blocks until every batch is consumed.
  void pipeline(int64_t num_batches, const std::function<at::Tensor(int64_t)>& load,
                const std::function<std::vector<at::Tensor>(const at::Tensor&)>& compute,
                const std::function<void(int64_t, std::vector<at::Tensor>&)>& consume) const;

 private:
  at::Device device_;
  Precision precision_;
  MixedPrecision amp_;
  std::optional<c10::Stream> copy_stream_;  // CUDA only
};

// The stage's device from its key (auto|cpu|cuda, as Runtime chose it) and its precision key's
// value; throws std::invalid_argument naming `precision_key` for a precision the device lacks.
StageDevice stage_device(at::Device device, const std::string& precision, const std::string& precision_key);

}  // namespace lf::launch
