// torch_stream.h for a CPU-only LibTorch: no torch stream exists, NCCL uses the default one.
#include "distributed/cuda/torch_stream.h"

namespace lf::dist {

void* current_torch_cuda_stream() { return nullptr; }
bool torch_has_cuda_build() { return false; }

}  // namespace lf::dist
