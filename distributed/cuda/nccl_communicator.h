// Communicator over NCCL for CUDA tensors: collectives on raw device pointers, enqueued on
// torch's current CUDA stream (or the default stream), completion polled with a CUDA event so
// waits honour deadlines. Built when LF_NCCL is on (nccl.h + cudart), whatever LibTorch's
// flavour; with a CPU-only LibTorch no CUDA tensor can reach it, but it compiles and links.
#pragma once
#include <nccl.h>

#include <memory>
#include <string>

#include "distributed/communicator.h"

namespace lf::dist {

// Number of visible CUDA devices; 0 when there is none or no usable driver.
int cuda_device_count();
// "" when a device is usable, else why not ("no CUDA device: cudaErrorNoDevice: ...").
std::string cuda_unavailable_reason();

class NCCLCommunicator final : public Communicator {
 public:
  // Collective and blocking. Rank and world size are `bootstrap`'s (MPI in a job, the fake in
  // tests): rank 0 makes the ncclUniqueId, bootstrap broadcasts it as a CPU uint8 tensor, then
  // every rank calls ncclCommInitRank on CUDA device `device` (device_for_local_rank()). The
  // bootstrap is duplicated and kept for duplicate().
  NCCLCommunicator(Communicator& bootstrap, int device);
  ~NCCLCommunicator() override;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  std::string backend() const override { return "nccl"; }
  std::string host() const override { return host_; }
  int device() const { return device_; }

  std::shared_ptr<Work> all_reduce_async(const torch::Tensor& tensor, ReduceOp op,
                                         const std::string& what) override;
  std::shared_ptr<Work> broadcast_async(const torch::Tensor& tensor, int root,
                                        const std::string& what) override;
  std::shared_ptr<Work> all_gather_async(const torch::Tensor& in, const torch::Tensor& out,
                                         const std::string& what) override;
  // ncclSend/ncclRecv to and from every rank in one group (NCCL >= 2.7).
  std::shared_ptr<Work> all_to_all_async(const torch::Tensor& in, const torch::Tensor& out,
                                         const std::string& what) override;
  // NCCL has no barrier: an all-reduce of one device float.
  std::shared_ptr<Work> barrier_async(const std::string& what) override;
  std::unique_ptr<Communicator> duplicate() override;
  // The bootstrap is split (MPI_Comm_split / split_type), and a new NCCL communicator is made
  // over each part: works with every NCCL version (ncclCommSplit needs 2.18).
  std::unique_ptr<Communicator> split(int color, int key) override;
  std::unique_ptr<Communicator> split_host() override;
  // ncclCommAbort (so no kernel waits on a dead peer), then abort_job.
  [[noreturn]] void abort(const std::string& message) override;

 private:
  void check_cuda_tensor(const torch::Tensor& tensor, const char* op) const;
  std::shared_ptr<Work> finish(const std::string& what, std::vector<torch::Tensor> keep_alive);

  std::unique_ptr<Communicator> bootstrap_;
  ncclComm_t comm_ = nullptr;
  int rank_ = 0;
  int world_size_ = 1;
  int device_ = 0;
  std::string host_;
  void* barrier_buffer_ = nullptr;  // one float on the device
};

}  // namespace lf::dist
