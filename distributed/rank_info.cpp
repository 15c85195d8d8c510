// Rank discovery from mpirun's and Slurm's environment variables.
#include "distributed/rank_info.h"

#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <vector>

#include "core/util/strings.h"

namespace lf::dist {
namespace {

struct LauncherVars {
  const char* rank;
  const char* size;
  const char* local_rank;
  const char* name;
};
constexpr LauncherVars kMpirun{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                               "OMPI_COMM_WORLD_LOCAL_RANK", "mpirun"};
constexpr LauncherVars kSlurm{"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "slurm"};
constexpr const char* kMpirunLocalSize = "OMPI_COMM_WORLD_LOCAL_SIZE";
constexpr const char* kSlurmTasksPerNode = "SLURM_STEP_TASKS_PER_NODE";
constexpr const char* kSlurmNodeId = "SLURM_NODEID";

// Slurm's step id of a batch script (SLURM_BATCH_SCRIPT in slurm.h: 0xfffffffb).
constexpr const char* kBatchStepId = "4294967291";

// True inside an sbatch script's own process tree: a job (SLURM_JOB_ID) but no srun step
// (SLURM_STEP_ID / the older SLURM_STEPID unset, or the batch step's id). There SLURM_PROCID
// and SLURM_NTASKS describe the batch script (rank 0 of the allocation's task count), not a
// process of a job step: a program run directly by the script, or by an `mpirun` inside it
// (which starts its local ranks as the script's children), inherits them unchanged.
bool in_batch_step(const EnvLookup& env) {
  if (env("SLURM_JOB_ID") == nullptr) return false;
  const char* step = env("SLURM_STEP_ID");
  if (step == nullptr) step = env("SLURM_STEPID");
  if (step == nullptr) return true;
  const std::string id = trim(step);
  return id == kBatchStepId || id == "batch";
}

int parse_int(const char* key, const char* value) {
  const std::string text = trim(value);
  size_t used = 0;
  long parsed = -1;
  try {
    parsed = std::stol(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty() || parsed < 0 || parsed > (1L << 30))
    throw std::invalid_argument(
        lf::str("environment variable ", key, "='", value, "' is not a non-negative integer"));
  return static_cast<int>(parsed);
}

// Ranks on this node: mpirun says it directly; Slurm lists tasks per node of the step. Absent:
// at least local_rank + 1 (what is known for sure).
int read_local_size(const EnvLookup& env, const LauncherVars& vars, int local_rank) {
  int size = local_rank + 1;
  if (&vars == &kMpirun) {
    if (const char* v = env(kMpirunLocalSize)) size = parse_int(kMpirunLocalSize, v);
  } else if (const char* list = env(kSlurmTasksPerNode)) {
    const std::vector<int> counts = parse_tasks_per_node(kSlurmTasksPerNode, list);
    const char* node = env(kSlurmNodeId);
    const int index = node ? parse_int(kSlurmNodeId, node) : 0;
    if (index >= static_cast<int>(counts.size()))
      throw std::invalid_argument(lf::str(kSlurmNodeId, "=", index, " but ", kSlurmTasksPerNode, "='",
                                          list, "' lists ", counts.size(), " node(s)"));
    size = counts[index];
  }
  if (local_rank >= size)
    throw std::invalid_argument(lf::str(vars.local_rank, "=", local_rank, " is not a local rank of ",
                                        size, " on this node (", vars.name, ")"));
  return size;
}

// The launcher's values, or nullopt when its rank variable is absent.
std::optional<RankInfo> read_launcher(const EnvLookup& env, const LauncherVars& vars) {
  const char* rank = env(vars.rank);
  if (rank == nullptr) return std::nullopt;
  const char* size = env(vars.size);
  if (size == nullptr)
    throw std::invalid_argument(lf::str(vars.rank, " is set (", rank, ") but ", vars.size,
                                    " is not; both come from the launcher (", vars.name, ")"));
  RankInfo info;
  info.rank = parse_int(vars.rank, rank);
  info.world_size = parse_int(vars.size, size);
  const char* local = env(vars.local_rank);
  info.local_rank = local ? parse_int(vars.local_rank, local) : 0;
  info.source = vars.name;
  if (info.world_size < 1 || info.rank >= info.world_size)
    throw std::invalid_argument(lf::str(vars.rank, "=", info.rank, " is not a rank of ", vars.size,
                                    "=", info.world_size));
  info.local_size = read_local_size(env, vars, info.local_rank);
  return info;
}

std::string describe(const LauncherVars& vars, const RankInfo& info) {
  return lf::str(vars.rank, "=", info.rank, " ", vars.size, "=", info.world_size, " ",
             vars.local_rank, "=", info.local_rank);
}

}  // namespace

RankInfo discover_rank_info(const EnvLookup& getenv_fn) {
  const EnvLookup env = getenv_fn ? getenv_fn : EnvLookup([](const char* k) { return std::getenv(k); });
  std::optional<RankInfo> mpirun = read_launcher(env, kMpirun);
  // In the batch step Slurm's variables are the script's, not this process's: ignore them
  // (unless forced), so mpirun inside an allocation and single-process commands in a
  // multi-task allocation need no LF_RANK_SOURCE.
  const bool batch_step = in_batch_step(env);
  std::optional<RankInfo> slurm = read_launcher(env, kSlurm);

  if (const char* forced = env("LF_RANK_SOURCE")) {
    const std::string choice = trim(forced);
    if (choice == "mpirun" || choice == "slurm") {
      const std::optional<RankInfo>& chosen = choice == "mpirun" ? mpirun : slurm;
      if (!chosen)
        throw std::invalid_argument(lf::str("LF_RANK_SOURCE=", choice, " but ",
                                        choice == "mpirun" ? kMpirun.rank : kSlurm.rank,
                                        " is not set; was the job launched by ", choice, "?"));
      return *chosen;
    }
    throw std::invalid_argument(
        lf::str("LF_RANK_SOURCE='", forced, "' is not one of: mpirun, slurm"));
  }

  if (batch_step) slurm.reset();
  if (mpirun && slurm) {
    if (mpirun->rank != slurm->rank || mpirun->world_size != slurm->world_size ||
        mpirun->local_rank != slurm->local_rank)
      throw std::invalid_argument(
          lf::str("mpirun and Slurm disagree about this process: ", describe(kMpirun, *mpirun),
              " but ", describe(kSlurm, *slurm),
              "; launch with one of them (srun, or mpirun outside Slurm), or set "
              "LF_RANK_SOURCE=mpirun when mpirun's ranks run inside a Slurm job step (mpirun "
              "over several nodes of an allocation starts its remote daemons with srun)"));
    RankInfo both = *mpirun;
    both.source = "mpirun+slurm";
    return both;
  }
  if (mpirun) return *mpirun;
  if (slurm) return *slurm;
  // torchrun and accelerate describe their world with WORLD_SIZE/RANK; started that way, W
  // processes would each train alone into one run directory. Refuse.
  if (const char* ws = env("WORLD_SIZE")) {
    const std::string text = trim(ws);
    if (!text.empty() && text != "0" && text != "1")
      throw std::invalid_argument(lf::str(
          "WORLD_SIZE=", text, " (RANK=", env("RANK") ? env("RANK") : "unset",
          ") says this process is one of several started by torchrun or accelerate, which latentforge "
          "cannot join: its ranks meet through MPI. Launch with `mpirun -np ", text,
          " latentforge ...` or `srun --ntasks=", text, " latentforge ...` instead (unset WORLD_SIZE "
          "to run a single process)"));
  }
  return RankInfo{};
}

std::vector<int> parse_tasks_per_node(const char* key, const std::string& text) {
  std::vector<int> counts;
  const auto bad = [&] {
    return std::invalid_argument(lf::str("environment variable ", key, "='", text,
                                         "' is not a list of task counts like 2(x3),1"));
  };
  if (text.empty() || text.back() == ',') throw bad();
  size_t i = 0;
  while (i < text.size()) {
    size_t end = text.find(',', i);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(i, end - i);
    const size_t paren = item.find("(x");
    int repeat = 1;
    std::string count = item;
    if (paren != std::string::npos) {
      if (item.back() != ')') throw bad();
      count = item.substr(0, paren);
      const std::string times = item.substr(paren + 2, item.size() - paren - 3);
      if (times.empty() || times.find_first_not_of("0123456789") != std::string::npos) throw bad();
      repeat = std::stoi(times);
    }
    if (count.empty() || count.find_first_not_of("0123456789") != std::string::npos || count.size() > 9 ||
        repeat > 1000000)
      throw bad();
    counts.insert(counts.end(), repeat, std::stoi(count));
    i = end + 1;
  }
  if (counts.empty()) throw bad();
  return counts;
}

int device_for_local_rank(int local_rank, int device_count) {
  if (device_count <= 0)
    throw std::invalid_argument(lf::str("local rank ", local_rank,
                                    " needs a CUDA device but none is visible (device count ",
                                    device_count, "); check CUDA_VISIBLE_DEVICES and the driver"));
  if (local_rank < 0 || local_rank >= device_count)
    throw std::invalid_argument(
        lf::str("local rank ", local_rank, " has no CUDA device of its own: this node shows ",
            device_count, " device(s); start at most ", device_count,
            " ranks per node (e.g. srun --ntasks-per-node=", device_count,
            " or mpirun --map-by ppr:", device_count, ":node)"));
  return local_rank;
}

}  // namespace lf::dist
