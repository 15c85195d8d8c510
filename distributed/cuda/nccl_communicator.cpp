// NCCLCommunicator: NCCL collectives on device pointers, CUDA-event completion, MPI bootstrap.
#include "distributed/cuda/nccl_communicator.h"

#include <cuda_runtime.h>

#include <cstring>

#include "core/util/strings.h"
#include "distributed/abort.h"
#include "distributed/cuda/nccl_check.h"
#include "distributed/cuda/torch_stream.h"

namespace lf::dist {
namespace {

// Makes `device` current for its scope (NCCL calls and events belong to a device).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    LF_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) LF_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};

ncclDataType_t nccl_type(torch::ScalarType dtype, ReduceOp op, const std::string& tag) {
  switch (dtype) {
    case torch::kFloat: return ncclFloat32;
    case torch::kDouble: return ncclFloat64;
    case torch::kHalf: return ncclFloat16;
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 10, 0)
    case torch::kBFloat16: return ncclBfloat16;
#endif
    case torch::kLong: return ncclInt64;
    case torch::kInt: return ncclInt32;
    case torch::kChar: return ncclInt8;
    case torch::kByte: return ncclUint8;
    case torch::kBool:
      TORCH_CHECK(op != ReduceOp::kSum, tag, " all_reduce: sum of a bool tensor is not defined; "
                  "use kMax or kMin");
      return ncclUint8;
    default:
      TORCH_CHECK(false, tag, " NCCL has no type for dtype ", dtype);
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

cudaStream_t stream() { return static_cast<cudaStream_t>(current_torch_cuda_stream()); }

// Done when the event recorded after the collective has passed on the stream; an asynchronous
// NCCL error (a peer failed) is reported while waiting.
class NCCLWork final : public Work {
 public:
  NCCLWork(ncclComm_t comm, int device, cudaEvent_t event, std::vector<torch::Tensor> keep_alive,
           const std::string& what, const Communicator& owner)
      : Work(what, owner.tag(), owner.timeout(), owner.poll_policy()),
        comm_(comm),
        device_(device),
        event_(event),
        keep_alive_(std::move(keep_alive)) {}

  ~NCCLWork() override {
    // An abandoned collective may still write its buffers: keep them (the job is ending).
    if (!done_) new std::vector<torch::Tensor>(std::move(keep_alive_));
    cudaEventDestroy(event_);
  }

  bool test() override {
    if (done_) return true;
    DeviceGuard guard(device_);
    const cudaError_t state = cudaEventQuery(event_);
    if (state == cudaSuccess) {
      done_ = true;
      keep_alive_.clear();
      return true;
    }
    if (state != cudaErrorNotReady) LF_CUDA_CHECK(state);
    ncclResult_t async = ncclSuccess;
    LF_NCCL_CHECK(ncclCommGetAsyncError(comm_, &async));
    LF_NCCL_CHECK(async);
    return false;
  }

 private:
  ncclComm_t comm_;
  int device_;
  cudaEvent_t event_;
  std::vector<torch::Tensor> keep_alive_;
  bool done_ = false;
};

}  // namespace

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return 0;
  }
  return count;
}

std::string cuda_unavailable_reason() {
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess) {
    cudaGetLastError();
    return lf::str("no CUDA device: ", cudaGetErrorName(rc), ": ", cudaGetErrorString(rc));
  }
  if (count == 0) return "no CUDA device: cudaGetDeviceCount returned 0";
  return "";
}

NCCLCommunicator::NCCLCommunicator(Communicator& bootstrap, int device)
    : bootstrap_(bootstrap.duplicate()),
      rank_(bootstrap.rank()),
      world_size_(bootstrap.world_size()),
      device_(device),
      host_(bootstrap.host()) {
  DeviceGuard guard(device_);
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (rank_ == 0) LF_NCCL_CHECK(ncclGetUniqueId(&id));
  torch::Tensor bytes = torch::empty({static_cast<int64_t>(sizeof(id))}, torch::kByte);
  std::memcpy(bytes.data_ptr(), &id, sizeof(id));
  bootstrap_->broadcast(bytes, 0, "broadcast of the NCCL unique id");
  std::memcpy(&id, bytes.data_ptr(), sizeof(id));
  LF_NCCL_CHECK(ncclCommInitRank(&comm_, world_size_, id, rank_));
  LF_CUDA_CHECK(cudaMalloc(&barrier_buffer_, sizeof(float)));
  LF_CUDA_CHECK(cudaMemset(barrier_buffer_, 0, sizeof(float)));
}

NCCLCommunicator::~NCCLCommunicator() {
  if (barrier_buffer_ != nullptr) cudaFree(barrier_buffer_);
  if (comm_ != nullptr) ncclCommDestroy(comm_);
}

void NCCLCommunicator::check_cuda_tensor(const torch::Tensor& tensor, const char* op) const {
  check_collective_tensor(tensor, op);
  TORCH_CHECK(tensor.is_cuda() && tensor.device().index() == device_, tag(), " ", op,
              ": NCCLCommunicator on cuda:", device_, " got a tensor on ", tensor.device(),
              "; CPU tensors go through MPICommunicator");
}

std::shared_ptr<Work> NCCLCommunicator::finish(const std::string& what,
                                               std::vector<torch::Tensor> keep_alive) {
  cudaEvent_t event = nullptr;
  LF_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  LF_CUDA_CHECK(cudaEventRecord(event, stream()));
  return std::make_shared<NCCLWork>(comm_, device_, event, std::move(keep_alive), what, *this);
}

std::shared_ptr<Work> NCCLCommunicator::all_reduce_async(const torch::Tensor& tensor, ReduceOp op,
                                                         const std::string& what) {
  check_cuda_tensor(tensor, "all_reduce");
  DeviceGuard guard(device_);
  LF_NCCL_CHECK(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(),
                              static_cast<size_t>(tensor.numel()),
                              nccl_type(tensor.scalar_type(), op, tag()), nccl_op(op), comm_,
                              stream()));
  return finish(what, {tensor});
}

std::shared_ptr<Work> NCCLCommunicator::broadcast_async(const torch::Tensor& tensor, int root,
                                                        const std::string& what) {
  check_cuda_tensor(tensor, "broadcast");
  check_root(root, "broadcast");
  DeviceGuard guard(device_);
  LF_NCCL_CHECK(ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(),
                              static_cast<size_t>(tensor.numel() * tensor.element_size()),
                              ncclUint8, root, comm_, stream()));
  return finish(what, {tensor});
}

std::shared_ptr<Work> NCCLCommunicator::all_gather_async(const torch::Tensor& in,
                                                         const torch::Tensor& out,
                                                         const std::string& what) {
  check_cuda_tensor(in, "all_gather");
  check_cuda_tensor(out, "all_gather");
  check_all_gather_out(in, out);
  DeviceGuard guard(device_);
  LF_NCCL_CHECK(ncclAllGather(in.data_ptr(), out.data_ptr(),
                              static_cast<size_t>(in.numel() * in.element_size()), ncclUint8,
                              comm_, stream()));
  return finish(what, {in, out});
}

std::shared_ptr<Work> NCCLCommunicator::all_to_all_async(const torch::Tensor& in,
                                                         const torch::Tensor& out,
                                                         const std::string& what) {
  check_cuda_tensor(in, "all_to_all");
  check_cuda_tensor(out, "all_to_all");
  check_all_to_all(in, out);
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 7, 0)
  DeviceGuard guard(device_);
  const size_t block = static_cast<size_t>(in.numel() / world_size_ * in.element_size());
  const char* send = static_cast<const char*>(in.data_ptr());
  char* recv = static_cast<char*>(out.data_ptr());
  LF_NCCL_CHECK(ncclGroupStart());
  for (int peer = 0; peer < world_size_; ++peer) {
    LF_NCCL_CHECK(ncclSend(send + peer * block, block, ncclUint8, peer, comm_, stream()));
    LF_NCCL_CHECK(ncclRecv(recv + peer * block, block, ncclUint8, peer, comm_, stream()));
  }
  LF_NCCL_CHECK(ncclGroupEnd());
  return finish(what, {in, out});
#else
  TORCH_CHECK(false, tag(), " all_to_all needs NCCL >= 2.7 (ncclSend/ncclRecv); this build has ",
              NCCL_MAJOR, ".", NCCL_MINOR, " (", what, ")");
#endif
}

std::shared_ptr<Work> NCCLCommunicator::barrier_async(const std::string& what) {
  DeviceGuard guard(device_);
  LF_NCCL_CHECK(ncclAllReduce(barrier_buffer_, barrier_buffer_, 1, ncclFloat32, ncclSum, comm_,
                              stream()));
  return finish(what, {});
}

std::unique_ptr<Communicator> NCCLCommunicator::duplicate() {
  auto copy = std::make_unique<NCCLCommunicator>(*bootstrap_, device_);
  copy_settings_to(*copy);
  return copy;
}

std::unique_ptr<Communicator> NCCLCommunicator::split(int color, int key) {
  check_color(color);
  std::unique_ptr<Communicator> part = bootstrap_->split(color, key);
  auto result = std::make_unique<NCCLCommunicator>(*part, device_);
  copy_settings_to(*result);
  return result;
}

std::unique_ptr<Communicator> NCCLCommunicator::split_host() {
  std::unique_ptr<Communicator> part = bootstrap_->split_host();
  auto result = std::make_unique<NCCLCommunicator>(*part, device_);
  copy_settings_to(*result);
  return result;
}

void NCCLCommunicator::abort(const std::string& message) {
  if (comm_ != nullptr) ncclCommAbort(comm_);
  comm_ = nullptr;
  abort_job(message);
}

}  // namespace lf::dist
