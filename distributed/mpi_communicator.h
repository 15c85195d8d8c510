// Communicator over MPI for CPU tensors: non-blocking MPI_Iallreduce/Ibcast/Iallgather/
// Ialltoall/Ibarrier whose Work is driven by MPI_Test (Open MPI 4.1 progresses only inside MPI
// calls); sub-communicators by MPI_Comm_split and MPI_Comm_split_type.
#pragma once
#include "distributed/mpi_include.h"

#include <memory>
#include <string>

#include "distributed/communicator.h"

namespace lf::dist {

class MPICommunicator final : public Communicator {
 public:
  // A communicator over all ranks, duplicated from MPI_COMM_WORLD so LatentForge's traffic
  // never matches collectives issued elsewhere. Requires an MPIRuntime. Collective, blocking.
  static std::unique_ptr<MPICommunicator> world();

  // Takes ownership of `comm` (MPI_Comm_free in the destructor); sets MPI_ERRORS_RETURN on it.
  explicit MPICommunicator(MPI_Comm comm);
  ~MPICommunicator() override;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  std::string backend() const override { return "mpi"; }
  std::string host() const override { return host_; }
  MPI_Comm handle() const { return comm_; }

  std::shared_ptr<Work> all_reduce_async(const torch::Tensor& tensor, ReduceOp op,
                                         const std::string& what) override;
  std::shared_ptr<Work> broadcast_async(const torch::Tensor& tensor, int root,
                                        const std::string& what) override;
  std::shared_ptr<Work> all_gather_async(const torch::Tensor& in, const torch::Tensor& out,
                                         const std::string& what) override;
  std::shared_ptr<Work> all_to_all_async(const torch::Tensor& in, const torch::Tensor& out,
                                         const std::string& what) override;
  std::shared_ptr<Work> barrier_async(const std::string& what) override;
  std::unique_ptr<Communicator> duplicate() override;
  std::unique_ptr<Communicator> split(int color, int key) override;
  // MPI_Comm_split_type(MPI_COMM_TYPE_SHARED): the ranks Open MPI places on this node.
  std::unique_ptr<Communicator> split_host() override;
  [[noreturn]] void abort(const std::string& message) override;

 private:
  void check_cpu(const torch::Tensor& tensor, const char* op) const;
  int checked_count(int64_t count, const char* op) const;

  MPI_Comm comm_;
  int rank_ = 0;
  int world_size_ = 1;
  std::string host_;
};

}  // namespace lf::dist
