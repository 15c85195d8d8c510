// Rank, world size and local rank as told by the launcher: Open MPI's mpirun
// (OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK) or Slurm's srun (SLURM_PROCID/NTASKS/LOCALID); and
// the CUDA device a rank should use, from its local rank.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace lf::dist {

struct RankInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_size = 1;  // ranks of this job on this node (1 when the launcher does not say)
  std::string source = "none";  // "mpirun", "slurm", "mpirun+slurm" (both set, agreeing), "none"
};

// Reads the launcher's variables through `getenv` (the process environment by default).
// Slurm's are trusted only inside a job step (srun: SLURM_STEP_ID set): in an sbatch script's
// own step (SLURM_JOB_ID set, SLURM_STEP_ID unset) they describe the script, so they are
// ignored there, which makes `mpirun` inside an allocation, and single-process commands in a
// multi-task allocation, work unaided. When both launchers' variables count they must agree;
// otherwise throws std::invalid_argument naming both sets of values. LF_RANK_SOURCE=
// mpirun|slurm trusts one and ignores the other, wherever it runs: needed for `mpirun` over
// several nodes of an allocation, whose remote ranks inherit the srun step of their orted.
// The local size comes from OMPI_COMM_WORLD_LOCAL_SIZE, or from Slurm's per-node task counts
// (SLURM_STEP_TASKS_PER_NODE, e.g. "2(x3),1", at this node's index SLURM_NODEID).
// No launcher variables: a single process (rank 0 of 1). Any malformed value throws.
// Cheap, non-blocking; may be called before MPI_Init.
using EnvLookup = std::function<const char*(const char*)>;
RankInfo discover_rank_info(const EnvLookup& getenv_fn = nullptr);

// The CUDA device index for `local_rank` on a node with `device_count` visible devices: one
// device per local rank (as torchrun and DDP assume). Throws std::invalid_argument when
// there are no devices or more local ranks than devices, naming both counts. The caller sets
// the device (torch / cudaSetDevice) before creating CUDA tensors or an NCCLCommunicator.
int device_for_local_rank(int local_rank, int device_count);

// Slurm's task counts per node ("2(x3),1" -> 2, 2, 2, 1); throws std::invalid_argument naming
// `key` on a malformed list.
std::vector<int> parse_tasks_per_node(const char* key, const std::string& text);

}  // namespace lf::dist
