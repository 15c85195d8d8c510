// The communicator of a job with one rank (started without mpirun or srun): every collective
// completes at once (all-reduce and broadcast leave the tensor as it is, all-gather and
// all-to-all copy it; a split is another one-rank communicator), so single-process runs need
// no MPI at all.
#pragma once
#include <memory>
#include <string>

#include "distributed/communicator.h"

namespace lf::dist {

class LocalCommunicator final : public Communicator {
 public:
  LocalCommunicator();
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string backend() const override { return "local"; }
  std::string host() const override { return host_; }
  std::shared_ptr<Work> all_reduce_async(const torch::Tensor& tensor, ReduceOp op, const std::string& what) override;
  std::shared_ptr<Work> broadcast_async(const torch::Tensor& tensor, int root, const std::string& what) override;
  std::shared_ptr<Work> all_gather_async(const torch::Tensor& in, const torch::Tensor& out,
                                         const std::string& what) override;
  std::shared_ptr<Work> all_to_all_async(const torch::Tensor& in, const torch::Tensor& out,
                                         const std::string& what) override;
  std::shared_ptr<Work> barrier_async(const std::string& what) override;
  std::unique_ptr<Communicator> duplicate() override;
  std::unique_ptr<Communicator> split(int color, int key) override;
  std::unique_ptr<Communicator> split_host() override;
  [[noreturn]] void abort(const std::string& message) override;

 private:
  std::string host_;
};

}  // namespace lf::dist
