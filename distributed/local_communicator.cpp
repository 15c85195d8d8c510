// The one-rank communicator (see local_communicator.h).
#include "distributed/local_communicator.h"

#include "distributed/abort.h"
#include "distributed/rank_context.h"

namespace lf::dist {

namespace {

class DoneWork final : public Work {
 public:
  DoneWork(const std::string& what, const Communicator& comm)
      : Work(what, comm.tag(), comm.timeout(), comm.poll_policy()) {}
  bool test() override { return true; }
};

}  // namespace

LocalCommunicator::LocalCommunicator() : host_(local_host_name()) {}

std::shared_ptr<Work> LocalCommunicator::all_reduce_async(const torch::Tensor& tensor, ReduceOp,
                                                          const std::string& what) {
  check_collective_tensor(tensor, "all_reduce");
  return std::make_shared<DoneWork>(what, *this);
}

std::shared_ptr<Work> LocalCommunicator::broadcast_async(const torch::Tensor& tensor, int root,
                                                         const std::string& what) {
  check_collective_tensor(tensor, "broadcast");
  check_root(root, "broadcast");
  return std::make_shared<DoneWork>(what, *this);
}

std::shared_ptr<Work> LocalCommunicator::all_gather_async(const torch::Tensor& in, const torch::Tensor& out,
                                                          const std::string& what) {
  check_collective_tensor(in, "all_gather");
  check_all_gather_out(in, out);
  torch::NoGradGuard no_grad;
  out.select(0, 0).copy_(in);
  return std::make_shared<DoneWork>(what, *this);
}

std::shared_ptr<Work> LocalCommunicator::all_to_all_async(const torch::Tensor& in,
                                                          const torch::Tensor& out,
                                                          const std::string& what) {
  check_all_to_all(in, out);
  torch::NoGradGuard no_grad;
  out.copy_(in);
  return std::make_shared<DoneWork>(what, *this);
}

std::shared_ptr<Work> LocalCommunicator::barrier_async(const std::string& what) {
  return std::make_shared<DoneWork>(what, *this);
}

std::unique_ptr<Communicator> LocalCommunicator::duplicate() {
  auto c = std::make_unique<LocalCommunicator>();
  copy_settings_to(*c);
  return c;
}

std::unique_ptr<Communicator> LocalCommunicator::split(int color, int) {
  check_color(color);
  return duplicate();
}

std::unique_ptr<Communicator> LocalCommunicator::split_host() { return duplicate(); }

void LocalCommunicator::abort(const std::string& message) { abort_job(message); }

}  // namespace lf::dist
