// torch_stream.h for a CUDA LibTorch: hands NCCL the stream torch is computing on.
#include "distributed/cuda/torch_stream.h"

#include <c10/cuda/CUDAStream.h>

namespace lf::dist {

void* current_torch_cuda_stream() {
  return static_cast<void*>(c10::cuda::getCurrentCUDAStream().stream());
}
bool torch_has_cuda_build() { return true; }

}  // namespace lf::dist
