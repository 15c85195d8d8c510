// Runtime: rank discovery, MPI, communicator and device (see runtime.h).
#include "launch/runtime.h"

#include <glog/logging.h>
#include <torch/cuda.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>

#include "core/util/crash_point.h"
#include "core/util/strings.h"
#include "distributed/cuda/torch_stream.h"
#include "distributed/local_communicator.h"
#include "distributed/logging.h"
#include "distributed/mpi_communicator.h"
#include "distributed/rank_context.h"
#include "distributed/rank_layout.h"
#ifdef LF_WITH_NCCL
#include "distributed/cuda/nccl_communicator.h"
#endif

namespace lf::launch {

namespace {

bool cuda_usable() { return torch::cuda::is_available(); }

// Inside MPI_Init or MPI_Finalize, MPI_Abort may wait for the very locks the hung call holds:
// the watchdog ends this process instead, and the launcher (mpirun; srun --kill-on-bad-exit)
// ends the others on seeing a rank exit without MPI_Finalize.
void exit_for_phase(const std::string& message) {
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  std::_Exit(1);
}

// Why `cuda` cannot be used here: the build or the machine.
std::string no_cuda_reason() {
  if (!dist::torch_has_cuda_build())
    return "this build's LibTorch is CPU-only (build against a CUDA LibTorch: docs/cluster.md, Building for GPUs)";
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  return str("no CUDA device is visible to this process (CUDA_VISIBLE_DEVICES = ",
             visible ? str("'", visible, "'") : std::string("unset"), ")");
}

}  // namespace

Runtime::Runtime(const std::string& device, const DistConfig& dist, const std::string& device_key,
                 bool device_collectives) {
  info_ = dist::discover_rank_info();
  if (device == "cuda" && !cuda_usable())
    throw std::invalid_argument(str(device_key, " = cuda, but ", no_cuda_reason(), "; set ", device_key,
                                    " = cpu or auto"));
  bool use_cuda = device == "cuda" || (device == "auto" && cuda_usable());
  if (use_cuda) {
    int n = static_cast<int>(torch::cuda::device_count());
    device_ = at::Device(at::kCUDA, static_cast<at::DeviceIndex>(dist::device_for_local_rank(info_.local_rank, n)));
  }
  if (info_.world_size > 1) {
    phase_timeout_s_ = dist.timeout_s;
    watchdog_ = std::make_unique<dist::Watchdog>(dist::rank_tag(), exit_for_phase, dist::Seconds(0.1));
    const dist::Seconds limit(phase_timeout_s_);
    pause_point("runtime.mpi_init");
    {
      auto guard = watchdog_->arm("MPI_Init at start-up (it waits for every rank to start)", limit);
      mpi_ = std::make_unique<dist::MPIRuntime>(nullptr, nullptr, dist::ThreadLevel::kSerialized);
    }
    dist::set_rank_context({mpi_->rank(), mpi_->world_size(), dist::local_host_name()});
    auto guard = watchdog_->arm("the communicator set-up at start-up (MPI_Comm_dup, NCCL init)", limit);
    auto mpi_comm = dist::MPICommunicator::world();
    mpi_comm->set_timeout(dist::Seconds(dist.timeout_s));
#ifdef LF_WITH_NCCL
    if (use_cuda && device_collectives) {
      comm_ = std::make_unique<dist::NCCLCommunicator>(*mpi_comm, device_.index());
      comm_->set_timeout(dist::Seconds(dist.timeout_s));
      cpu_comm_ = std::move(mpi_comm);
    } else {
      comm_ = std::move(mpi_comm);
    }
#else
    if (use_cuda && device_collectives)
      throw std::invalid_argument("multi-rank training on CUDA needs a build with NCCL (LF_NCCL=ON)");
    comm_ = std::move(mpi_comm);
#endif
    heartbeat_ = std::make_unique<dist::Heartbeat>(cpu_comm());
    const auto places = dist::gather_layout(cpu_comm(), info_, dist::rank_context().host, at::get_num_threads());
    if (info_.rank == 0) {
      LOG(INFO) << dist::describe_layout(places);
      for (const std::string& problem : dist::check_layout(places)) LOG(WARNING) << problem;
    }
  } else {
    dist::set_rank_context({0, 1, dist::local_host_name()});
    comm_ = std::make_unique<dist::LocalCommunicator>();
  }
  FLAGS_minloglevel = dist::log_level_for_rank(info_.rank);
}

Runtime::~Runtime() {
  const bool unwinding = std::uncaught_exceptions() > 0;  // then MPIRuntime leaves MPI to abort_job
  if (mpi_ && !unwinding) pause_point("runtime.finalize");
  std::optional<dist::Watchdog::Guard> guard;
  if (watchdog_ && !unwinding)
    guard.emplace(watchdog_->arm("MPI_Finalize at the end (it waits for every rank to finish)",
                                 dist::Seconds(phase_timeout_s_)));
  heartbeat_.reset();
  cpu_comm_.reset();
  comm_.reset();
  mpi_.reset();
  guard.reset();
  watchdog_.reset();
}

}  // namespace lf::launch
