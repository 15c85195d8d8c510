// NCCLCommunicator on one process (world of 1, bootstrapped through the fake): runs where a
// CUDA device and a CUDA LibTorch exist, skips with the reason elsewhere.
#include <gtest/gtest.h>

#include "distributed/cuda/torch_stream.h"
#include "distributed/fake_communicator.h"
#if LF_WITH_NCCL
#include "distributed/cuda/nccl_communicator.h"
#endif

namespace lf::dist {
namespace {

#if LF_WITH_NCCL
// "" when NCCL tests can run here, else why not.
std::string nccl_skip_reason() {
  const std::string reason = cuda_unavailable_reason();
  if (!reason.empty()) return reason;
  if (!torch_has_cuda_build()) return "LibTorch was built without CUDA: no CUDA tensors";
  return "";
}

TEST(NCCLCommunicator, CollectivesOnOneDevice) {
  const std::string skip = nccl_skip_reason();
  if (!skip.empty()) GTEST_SKIP() << skip;
  auto world = FakeWorld::create(1);
  auto bootstrap = world->communicator(0);
  NCCLCommunicator nccl(*bootstrap, 0);
  EXPECT_EQ(nccl.rank(), 0);
  EXPECT_EQ(nccl.world_size(), 1);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA, 0);
  for (auto dtype : {torch::kFloat, torch::kDouble, torch::kHalf, torch::kLong}) {
    torch::Tensor t = torch::arange(6, cuda.dtype(dtype));
    nccl.all_reduce(t, ReduceOp::kSum, "sum");
    EXPECT_TRUE(torch::equal(t.cpu(), torch::arange(6, torch::TensorOptions().dtype(dtype))));
  }
  torch::Tensor b = torch::full({3}, 7.0, cuda);
  nccl.broadcast(b, 0, "broadcast");
  EXPECT_TRUE(torch::equal(b.cpu(), torch::full({3}, 7.0)));
  torch::Tensor g = nccl.all_gather(torch::arange(4, cuda), "gather");
  EXPECT_EQ(g.sizes(), (std::vector<int64_t>{1, 4}));
  nccl.barrier("barrier");
  EXPECT_THROW(nccl.all_reduce(torch::ones({2}), ReduceOp::kSum, "cpu"), c10::Error);
}
#endif

TEST(NCCLCommunicator, SkipsWithAReasonWhenUnavailable) {
#if LF_WITH_NCCL
  const std::string skip = nccl_skip_reason();
  if (!skip.empty()) {
    EXPECT_EQ(skip.rfind("no CUDA device", 0) == 0 || skip.find("LibTorch") != std::string::npos,
              true)
        << skip;
    GTEST_SKIP() << skip;
  }
  EXPECT_GT(cuda_device_count(), 0);
#else
  GTEST_SKIP() << "built without NCCL (LF_NCCL=OFF)";
#endif
}

}  // namespace
}  // namespace lf::dist
