// The process's place in the job: rank discovery (mpirun or Slurm), MPI start-up when there
// are other ranks, the communicator for this device (MPI on CPU, NCCL on CUDA), the device.
#pragma once
#include <ATen/ATen.h>

#include <memory>
#include <string>

#include "distributed/communicator.h"
#include "distributed/heartbeat.h"
#include "distributed/mpi_runtime.h"
#include "distributed/rank_info.h"
#include "distributed/watchdog.h"
#include "launch/config.h"

namespace lf::launch {

class Runtime {
 public:
  // Discovers rank and world size; with world > 1 starts MPI (thread level MULTIPLE, or
  // SERIALIZED at least), builds the communicator (NCCL for CUDA when built with it), starts
  // the heartbeat (timeouts name a silent host) and logs the ranks per host on rank 0.
  // `device` is auto|cpu|cuda, the value of the config key `device_key` (named in errors):
  // cuda without a usable GPU throws std::invalid_argument saying why (exit 2). Stages that
  // exchange only CPU tensors (encode, sample, eval) pass `device_collectives` = false: comm()
  // is then MPI whatever the device, and no NCCL is needed.
  // Collective when world > 1: MPI_Init, the communicator set-up and (in the destructor)
  // MPI_Finalize wait for every rank, each under a watchdog with dist.timeout_s, so a peer that
  // never starts or never ends ends the job with a message naming the phase (invariant 10).
  Runtime(const std::string& device, const DistConfig& dist, const std::string& device_key = "train.device",
          bool device_collectives = true);
  ~Runtime();

  int rank() const { return info_.rank; }
  int world() const { return info_.world_size; }
  int local_rank() const { return info_.local_rank; }
  bool is_root() const { return info_.rank == 0; }
  at::Device device() const { return device_; }
  // Collectives on the device's tensors (NCCL on CUDA, MPI on CPU); world 1: local no-ops.
  dist::Communicator& comm() { return *comm_; }
  // Collectives on CPU tensors whatever the device (flags, metrics, agreement).
  dist::Communicator& cpu_comm() { return cpu_comm_ ? *cpu_comm_ : *comm_; }

 private:
  dist::RankInfo info_;
  std::unique_ptr<dist::Watchdog> watchdog_;  // start-up and shut-down phases (world > 1)
  double phase_timeout_s_ = 300.0;
  std::unique_ptr<dist::MPIRuntime> mpi_;
  std::unique_ptr<dist::Communicator> comm_;
  std::unique_ptr<dist::Communicator> cpu_comm_;
  std::unique_ptr<dist::Heartbeat> heartbeat_;
  at::Device device_{at::kCPU};
};

}  // namespace lf::launch
