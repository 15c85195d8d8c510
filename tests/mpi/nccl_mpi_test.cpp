// NCCLCommunicator bootstrapped over MPI (the unique id travels by MPI broadcast), one device
// per local rank: runs on a multi-GPU node with a CUDA LibTorch, skips with the reason elsewhere.
#include <gtest/gtest.h>

#include "distributed/cuda/torch_stream.h"
#include "distributed/rank_info.h"
#include "tests/mpi/mpi_test_main.h"
#if LF_WITH_NCCL
#include "distributed/cuda/nccl_communicator.h"
#endif

namespace lf::dist {
namespace {

TEST(NCCLOverMPI, AllReduceAndBroadcastOfRankFilledTensors) {
#if !LF_WITH_NCCL
  GTEST_SKIP() << "built without NCCL (LF_NCCL=OFF)";
#else
  auto comm = testkit::test_world();
  const RankInfo info = discover_rank_info();
  // Every rank of this test runs on one node, so they all reach the same verdict.
  std::string skip = cuda_unavailable_reason();
  if (skip.empty() && !torch_has_cuda_build()) skip = "LibTorch was built without CUDA";
  if (skip.empty() && cuda_device_count() <= info.local_rank)
    skip = "fewer CUDA devices than local ranks";
  if (!skip.empty()) GTEST_SKIP() << skip;
  const int device = device_for_local_rank(info.local_rank, cuda_device_count());
  NCCLCommunicator nccl(*comm, device);
  const auto on_device = torch::TensorOptions().device(torch::kCUDA, device);
  const int w = nccl.world_size();
  torch::Tensor t = torch::arange(1, 9, on_device.dtype(torch::kFloat)) * (nccl.rank() + 1);
  nccl.all_reduce(t, ReduceOp::kSum, "sum");
  EXPECT_TRUE(torch::equal(t.cpu(), torch::arange(1, 9, torch::kFloat) * (w * (w + 1) / 2)));
  torch::Tensor b = torch::full({4}, double(nccl.rank()), on_device.dtype(torch::kDouble));
  nccl.broadcast(b, w - 1, "broadcast");
  EXPECT_TRUE(torch::equal(b.cpu(), torch::full({4}, double(w - 1), torch::kDouble)));
  nccl.barrier("barrier");
#endif
}

}  // namespace
}  // namespace lf::dist
