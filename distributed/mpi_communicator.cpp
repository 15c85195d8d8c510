// MPICommunicator: the non-blocking MPI collectives and their MPI_Test-driven Work.
#include "distributed/mpi_communicator.h"

#include <climits>
#include <mutex>

#include "core/util/strings.h"
#include "distributed/abort.h"
#include "distributed/check.h"
#include "distributed/mpi_datatype.h"
#include "distributed/mpi_runtime.h"
#include "distributed/rank_context.h"

namespace lf::dist {
namespace {

class MPIWork final : public Work {
 public:
  MPIWork(MPI_Request request, std::vector<torch::Tensor> keep_alive, std::string what,
          const Communicator& comm)
      : Work(std::move(what), comm.tag(), comm.timeout(), comm.poll_policy()),
        request_(request),
        keep_alive_(std::move(keep_alive)) {}

  ~MPIWork() override {
    // A collective cannot be cancelled (MPI 4.1 §3.8.4): if it is abandoned (a timeout on the
    // way to abort_job), MPI may still write into its buffers, so they must outlive us.
    if (!done_ && mpi_is_active()) {
      static std::mutex mutex;
      static std::vector<std::vector<torch::Tensor>>* abandoned =
          new std::vector<std::vector<torch::Tensor>>();
      std::lock_guard<std::mutex> lock(mutex);
      abandoned->push_back(std::move(keep_alive_));
    }
  }

  bool test() override {
    if (done_) return true;
    int flag = 0;
    {
      auto lock = mpi_call_lock();
      LF_MPI_CHECK(MPI_Test(&request_, &flag, MPI_STATUS_IGNORE));
    }
    done_ = flag != 0;
    if (done_) keep_alive_.clear();
    return done_;
  }

 private:
  MPI_Request request_;
  std::vector<torch::Tensor> keep_alive_;
  bool done_ = false;
};

}  // namespace

std::unique_ptr<MPICommunicator> MPICommunicator::world() {
  MPI_Comm comm = MPI_COMM_NULL;
  {
    auto lock = mpi_call_lock();
    LF_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm));
  }
  return std::make_unique<MPICommunicator>(comm);
}

MPICommunicator::MPICommunicator(MPI_Comm comm) : comm_(comm) {
  auto lock = mpi_call_lock();
  LF_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  LF_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  LF_MPI_CHECK(MPI_Comm_size(comm_, &world_size_));
  host_ = rank_context().host;
}

MPICommunicator::~MPICommunicator() {
  if (comm_ != MPI_COMM_NULL && mpi_is_active()) {
    auto lock = mpi_call_lock();
    MPI_Comm_free(&comm_);  // no check: a destructor must not throw
  }
}

void MPICommunicator::check_cpu(const torch::Tensor& tensor, const char* op) const {
  check_collective_tensor(tensor, op);
  TORCH_CHECK(tensor.device().is_cpu(), tag(), " ", op, ": MPICommunicator takes CPU tensors, got a tensor on ",
              tensor.device(), "; CUDA tensors go through NCCLCommunicator");
}

int MPICommunicator::checked_count(int64_t count, const char* op) const {
  TORCH_CHECK(count <= INT_MAX, tag(), " ", op, ": ", count,
              " elements exceed MPI's int count; split the tensor (e.g. a smaller bucket_mb)");
  return static_cast<int>(count);
}

std::shared_ptr<Work> MPICommunicator::all_reduce_async(const torch::Tensor& tensor, ReduceOp op,
                                                        const std::string& what) {
  check_cpu(tensor, "all_reduce");
  const MPIReduction reduction = mpi_reduction(tensor.scalar_type(), op);
  const int count = checked_count(tensor.numel(), "all_reduce");
  MPI_Request request = MPI_REQUEST_NULL;
  {
    auto lock = mpi_call_lock();
    LF_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, tensor.data_ptr(), count, reduction.type,
                                reduction.op, comm_, &request));
  }
  return std::make_shared<MPIWork>(request, std::vector<torch::Tensor>{tensor}, what, *this);
}

std::shared_ptr<Work> MPICommunicator::broadcast_async(const torch::Tensor& tensor, int root,
                                                       const std::string& what) {
  check_cpu(tensor, "broadcast");
  check_root(root, "broadcast");
  const int bytes = checked_count(tensor.numel() * tensor.element_size(), "broadcast");
  MPI_Request request = MPI_REQUEST_NULL;
  {
    auto lock = mpi_call_lock();
    LF_MPI_CHECK(MPI_Ibcast(tensor.data_ptr(), bytes, MPI_BYTE, root, comm_, &request));
  }
  return std::make_shared<MPIWork>(request, std::vector<torch::Tensor>{tensor}, what, *this);
}

std::shared_ptr<Work> MPICommunicator::all_gather_async(const torch::Tensor& in,
                                                        const torch::Tensor& out,
                                                        const std::string& what) {
  check_cpu(in, "all_gather");
  check_cpu(out, "all_gather");
  check_all_gather_out(in, out);
  const int bytes = checked_count(in.numel() * in.element_size(), "all_gather");
  checked_count(out.numel() * out.element_size(), "all_gather");
  MPI_Request request = MPI_REQUEST_NULL;
  {
    auto lock = mpi_call_lock();
    LF_MPI_CHECK(MPI_Iallgather(in.data_ptr(), bytes, MPI_BYTE, out.data_ptr(), bytes, MPI_BYTE,
                                comm_, &request));
  }
  return std::make_shared<MPIWork>(request, std::vector<torch::Tensor>{in, out}, what, *this);
}

std::shared_ptr<Work> MPICommunicator::all_to_all_async(const torch::Tensor& in,
                                                        const torch::Tensor& out,
                                                        const std::string& what) {
  check_cpu(in, "all_to_all");
  check_cpu(out, "all_to_all");
  check_all_to_all(in, out);
  const int bytes = checked_count(in.numel() / world_size_ * in.element_size(), "all_to_all");
  checked_count(in.numel() * in.element_size(), "all_to_all");
  MPI_Request request = MPI_REQUEST_NULL;
  {
    auto lock = mpi_call_lock();
    LF_MPI_CHECK(MPI_Ialltoall(in.data_ptr(), bytes, MPI_BYTE, out.data_ptr(), bytes, MPI_BYTE,
                               comm_, &request));
  }
  return std::make_shared<MPIWork>(request, std::vector<torch::Tensor>{in, out}, what, *this);
}

std::shared_ptr<Work> MPICommunicator::barrier_async(const std::string& what) {
  MPI_Request request = MPI_REQUEST_NULL;
  {
    auto lock = mpi_call_lock();
    LF_MPI_CHECK(MPI_Ibarrier(comm_, &request));
  }
  return std::make_shared<MPIWork>(request, std::vector<torch::Tensor>{}, what, *this);
}

std::unique_ptr<Communicator> MPICommunicator::duplicate() {
  MPI_Comm copy = MPI_COMM_NULL;
  {
    auto lock = mpi_call_lock();
    LF_MPI_CHECK(MPI_Comm_dup(comm_, &copy));
  }
  auto result = std::make_unique<MPICommunicator>(copy);
  copy_settings_to(*result);
  return result;
}

std::unique_ptr<Communicator> MPICommunicator::split(int color, int key) {
  check_color(color);
  MPI_Comm part = MPI_COMM_NULL;
  {
    auto lock = mpi_call_lock();
    LF_MPI_CHECK(MPI_Comm_split(comm_, color, key, &part));
  }
  auto result = std::make_unique<MPICommunicator>(part);
  copy_settings_to(*result);
  return result;
}

std::unique_ptr<Communicator> MPICommunicator::split_host() {
  MPI_Comm part = MPI_COMM_NULL;
  {
    auto lock = mpi_call_lock();
    LF_MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &part));
  }
  auto result = std::make_unique<MPICommunicator>(part);
  copy_settings_to(*result);
  return result;
}

void MPICommunicator::abort(const std::string& message) { abort_job(message); }

}  // namespace lf::dist
