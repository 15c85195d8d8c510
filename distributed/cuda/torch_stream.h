// The CUDA stream torch is using on the current device, as a raw cudaStream_t (void*), so the
// NCCL communicator can run on torch's stream without including CUDA LibTorch headers.
// Built from torch_stream.cpp with a CUDA LibTorch, from torch_stream_none.cpp otherwise.
#pragma once

namespace lf::dist {

// nullptr means the legacy default stream (what a CPU-only LibTorch build can offer).
void* current_torch_cuda_stream();

// True when this build's LibTorch can place tensors on CUDA devices.
bool torch_has_cuda_build();

}  // namespace lf::dist
