// Device, precision and overlapped transfers of a pipeline stage (see stage_device.h). Only
// device-generic c10 APIs (Stream, Event, StreamGuard, VirtualGuardImpl) are used, so the same
// code compiles against the CPU-only and the CUDA LibTorch.
#include "launch/stage_device.h"

#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <chrono>
#include <thread>

#include "core/util/strings.h"

namespace lf::launch {

void HostResult::wait() const {
  if (!ready) return;
  // c10::Event has no blocking wait in LibTorch 1.13; poll it (a batch takes milliseconds).
  while (!ready->query()) std::this_thread::sleep_for(std::chrono::microseconds(50));
}

StageDevice::StageDevice(at::Device device, Precision precision)
    : device_(device), precision_(precision), amp_(precision, device) {
  if (is_cuda()) copy_stream_ = c10::impl::VirtualGuardImpl(device_.type()).getStreamFromGlobalPool(device_);
}

std::string StageDevice::describe() const { return str(device_.str(), ", ", launch::describe(precision_)); }

void StageDevice::prepare(torch::nn::Module& module) const {
  module.to(dtype());
  module.to(device_);
  module.eval();
}

at::Tensor StageDevice::upload(const at::Tensor& host) const {
  if (!host.defined()) return host;
  if (!is_cuda() || host.is_cuda()) return host.is_floating_point() ? host.to(device_, dtype()) : host.to(device_);
  at::Tensor src = host.is_pinned() ? host : host.contiguous().pin_memory();
  c10::impl::VirtualGuardImpl impl(device_.type());
  c10::Stream compute = impl.getStream(device_);
  at::Tensor on_device;
  {
    c10::StreamGuard on_copy_stream(*copy_stream_);
    on_device = src.to(device_, /*non_blocking=*/true);
  }
  c10::Event copied(device_.type());
  copied.record(*copy_stream_);
  copied.block(compute);
  on_device.record_stream(compute);
  return on_device.is_floating_point() ? on_device.to(dtype()) : on_device;
}

HostResult StageDevice::download(const std::vector<at::Tensor>& device_tensors) const {
  HostResult r;
  if (!is_cuda()) {
    r.tensors = device_tensors;
    return r;
  }
  for (const at::Tensor& t : device_tensors) {
    if (!t.defined() || !t.is_cuda()) {
      r.tensors.push_back(t);
      continue;
    }
    at::Tensor h = at::empty(t.sizes(), t.options().device(at::kCPU).pinned_memory(true));
    h.copy_(t, /*non_blocking=*/true);
    r.tensors.push_back(h);
  }
  r.ready = std::make_shared<c10::Event>(device_.type());
  r.ready->record(c10::impl::VirtualGuardImpl(device_.type()).getStream(device_));
  return r;
}

void StageDevice::pipeline(int64_t num_batches, const std::function<at::Tensor(int64_t)>& load,
                           const std::function<std::vector<at::Tensor>(const at::Tensor&)>& compute,
                           const std::function<void(int64_t, std::vector<at::Tensor>&)>& consume) const {
  if (!is_cuda()) {
    for (int64_t k = 0; k < num_batches; ++k) {
      std::vector<at::Tensor> out = compute(upload(load(k)));
      consume(k, out);
    }
    return;
  }
  std::optional<HostResult> previous;
  at::Tensor next = num_batches > 0 ? upload(load(0)) : at::Tensor();
  for (int64_t k = 0; k < num_batches; ++k) {
    at::Tensor current = std::move(next);
    HostResult result = download(compute(current));  // queued; the host goes on at once
    if (k + 1 < num_batches) next = upload(load(k + 1));
    if (previous) {
      previous->wait();
      consume(k - 1, previous->tensors);
    }
    previous = std::move(result);
  }
  if (previous) {
    previous->wait();
    consume(num_batches - 1, previous->tensors);
  }
}

StageDevice stage_device(at::Device device, const std::string& precision, const std::string& precision_key) {
  return StageDevice(device, resolve_precision(precision, device, precision_key));
}

}  // namespace lf::launch
