// Rank discovery from mpirun / Slurm variables, and the device chosen from the local rank.
#include "distributed/rank_info.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace lf::dist {
namespace {

EnvLookup env_of(const std::map<std::string, std::string>& vars) {
  return [vars](const char* key) -> const char* {
    auto it = vars.find(key);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

std::string error_of(const std::map<std::string, std::string>& vars) {
  try {
    discover_rank_info(env_of(vars));
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

TEST(RankInfo, NoLauncherIsASingleProcess) {
  const RankInfo info = discover_rank_info(env_of({}));
  EXPECT_EQ(info.rank, 0);
  EXPECT_EQ(info.world_size, 1);
  EXPECT_EQ(info.local_rank, 0);
  EXPECT_EQ(info.source, "none");
}

TEST(RankInfo, TorchrunWorldIsRefusedWithTheLaunchToUse) {
  std::string e = error_of({{"WORLD_SIZE", "4"}, {"RANK", "2"}, {"LOCAL_RANK", "2"}});
  EXPECT_NE(e.find("WORLD_SIZE=4 (RANK=2)"), std::string::npos) << e;
  EXPECT_NE(e.find("torchrun or accelerate"), std::string::npos) << e;
  EXPECT_NE(e.find("mpirun -np 4 latentforge"), std::string::npos) << e;
  EXPECT_NE(e.find("srun --ntasks=4"), std::string::npos) << e;
  // A world of one is a single process; an MPI or Slurm world wins over torchrun's variables.
  EXPECT_EQ(discover_rank_info(env_of({{"WORLD_SIZE", "1"}, {"RANK", "0"}})).world_size, 1);
  const RankInfo info = discover_rank_info(
      env_of({{"WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"}}));
  EXPECT_EQ(info.world_size, 2);
  EXPECT_EQ(info.source, "mpirun");
}

TEST(RankInfo, ReadsMpirun) {
  const RankInfo info = discover_rank_info(env_of(
      {{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "8"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}}));
  EXPECT_EQ(info.rank, 3);
  EXPECT_EQ(info.world_size, 8);
  EXPECT_EQ(info.local_rank, 1);
  EXPECT_EQ(info.source, "mpirun");
}

TEST(RankInfo, ReadsSlurm) {
  const RankInfo info = discover_rank_info(
      env_of({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "6"}, {"SLURM_LOCALID", "2"}}));
  EXPECT_EQ(info.rank, 5);
  EXPECT_EQ(info.world_size, 6);
  EXPECT_EQ(info.local_rank, 2);
  EXPECT_EQ(info.source, "slurm");
}

TEST(RankInfo, LocalSizeFromMpirun) {
  const RankInfo info = discover_rank_info(env_of({{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "4"},
                                                   {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                                   {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}}));
  EXPECT_EQ(info.local_size, 2);
  EXPECT_EQ(discover_rank_info(env_of({})).local_size, 1);
  // Unknown: what is certain, local rank + 1.
  EXPECT_EQ(discover_rank_info(env_of({{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "4"},
                                       {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}}))
                .local_size,
            2);
  const std::string error = error_of({{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "4"},
                                      {"OMPI_COMM_WORLD_LOCAL_RANK", "2"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
  EXPECT_NE(error.find("OMPI_COMM_WORLD_LOCAL_RANK=2 is not a local rank of 2 on this node"), std::string::npos)
      << error;
}

TEST(RankInfo, LocalSizeFromSlurmsTasksPerNodeAtThisNode) {
  // srun -n 7 over 4 nodes as Slurm spreads it: 2(x3),1; node 3 runs one task.
  std::map<std::string, std::string> vars = {{"SLURM_JOB_ID", "7"}, {"SLURM_STEP_ID", "0"},
                                             {"SLURM_PROCID", "6"}, {"SLURM_NTASKS", "7"},
                                             {"SLURM_LOCALID", "0"}, {"SLURM_NODEID", "3"},
                                             {"SLURM_STEP_TASKS_PER_NODE", "2(x3),1"}};
  EXPECT_EQ(discover_rank_info(env_of(vars)).local_size, 1);
  vars["SLURM_NODEID"] = "1";
  EXPECT_EQ(discover_rank_info(env_of(vars)).local_size, 2);
  vars["SLURM_NODEID"] = "4";
  EXPECT_NE(error_of(vars).find("SLURM_NODEID=4 but SLURM_STEP_TASKS_PER_NODE='2(x3),1' lists 4 node(s)"),
            std::string::npos)
      << error_of(vars);
}

TEST(RankInfo, ParsesTaskCountsPerNode) {
  EXPECT_EQ(parse_tasks_per_node("K", "2(x3),1"), (std::vector<int>{2, 2, 2, 1}));
  EXPECT_EQ(parse_tasks_per_node("K", "4"), (std::vector<int>{4}));
  EXPECT_EQ(parse_tasks_per_node("K", "1,3(x2)"), (std::vector<int>{1, 3, 3}));
  for (const char* bad : {"", "x", "2(x)", "2(3)", "2(x3", ",", "-1", "2(x3),"}) {
    try {
      parse_tasks_per_node("SLURM_STEP_TASKS_PER_NODE", bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("SLURM_STEP_TASKS_PER_NODE='"), std::string::npos) << e.what();
    }
  }
}

TEST(RankInfo, BothAgreeing) {
  const RankInfo info = discover_rank_info(env_of(
      {{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
       {"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"}}));
  EXPECT_EQ(info.rank, 1);
  EXPECT_EQ(info.source, "mpirun+slurm");
}

TEST(RankInfo, DisagreementNamesBothLaunchersValues) {
  const std::string error = error_of(
      {{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
       {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"}});
  EXPECT_NE(error.find("OMPI_COMM_WORLD_RANK=1"), std::string::npos) << error;
  EXPECT_NE(error.find("OMPI_COMM_WORLD_SIZE=4"), std::string::npos) << error;
  EXPECT_NE(error.find("SLURM_PROCID=0"), std::string::npos) << error;
  EXPECT_NE(error.find("SLURM_NTASKS=2"), std::string::npos) << error;
  EXPECT_NE(error.find("LF_RANK_SOURCE"), std::string::npos) << error;
}

TEST(RankInfo, RankSourceOverrideTrustsOneLauncher) {
  const RankInfo info = discover_rank_info(env_of(
      {{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
       {"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"},
       {"LF_RANK_SOURCE", "mpirun"}}));
  EXPECT_EQ(info.rank, 3);
  EXPECT_EQ(info.world_size, 4);
  EXPECT_EQ(info.source, "mpirun");
  EXPECT_NE(error_of({{"LF_RANK_SOURCE", "pbs"}}).find("LF_RANK_SOURCE='pbs'"), std::string::npos);
  EXPECT_NE(error_of({{"LF_RANK_SOURCE", "slurm"}}).find("SLURM_PROCID is not set"),
            std::string::npos);
}

// What `env` showed in an sbatch -n 2 script on Slurm 22.05 (cluster/slurm-local): the batch
// step has SLURM_JOB_ID and SLURM_PROCID=0/SLURM_NTASKS=2 but no SLURM_STEP_ID, and mpirun's
// local ranks inherit exactly that; srun's tasks get their own SLURM_PROCID and SLURM_STEP_ID.
std::map<std::string, std::string> batch_step_env() {
  return {{"SLURM_JOB_ID", "7"}, {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"}};
}

TEST(RankInfo, MpirunInsideABatchScriptIgnoresTheScriptsSlurmRank) {
  std::map<std::string, std::string> vars = batch_step_env();
  vars.insert({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"},
               {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}});
  const RankInfo info = discover_rank_info(env_of(vars));
  EXPECT_EQ(info.rank, 1);
  EXPECT_EQ(info.world_size, 2);
  EXPECT_EQ(info.local_rank, 1);
  EXPECT_EQ(info.source, "mpirun");
  // The batch step's id spelled out (SLURM_BATCH_SCRIPT) counts as the batch step too.
  vars["SLURM_STEP_ID"] = "4294967291";
  EXPECT_EQ(discover_rank_info(env_of(vars)).source, "mpirun");
}

TEST(RankInfo, SingleProcessInABatchScriptIsRankZeroOfOne) {
  const RankInfo info = discover_rank_info(env_of(batch_step_env()));
  EXPECT_EQ(info.rank, 0);
  EXPECT_EQ(info.world_size, 1);
  EXPECT_EQ(info.source, "none");
  // Forcing Slurm still reads the script's variables, as asked.
  std::map<std::string, std::string> vars = batch_step_env();
  vars["LF_RANK_SOURCE"] = "slurm";
  EXPECT_EQ(discover_rank_info(env_of(vars)).world_size, 2);
}

TEST(RankInfo, SrunTaskInsideAJobReadsItsStep) {
  for (const char* step_key : {"SLURM_STEP_ID", "SLURM_STEPID"}) {
    std::map<std::string, std::string> vars = {{"SLURM_JOB_ID", "7"}, {step_key, "0"},
                                               {"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"},
                                               {"SLURM_LOCALID", "1"}};
    const RankInfo info = discover_rank_info(env_of(vars));
    EXPECT_EQ(info.rank, 1) << step_key;
    EXPECT_EQ(info.world_size, 2) << step_key;
    EXPECT_EQ(info.source, "slurm") << step_key;
  }
}

TEST(RankInfo, MpirunRanksInsideAnSrunStepMustAgreeOrBeForced) {
  // mpirun over several nodes: a remote rank's orted runs in an srun step (one task per node).
  std::map<std::string, std::string> vars = {
      {"SLURM_JOB_ID", "7"}, {"SLURM_STEP_ID", "0"}, {"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"},
      {"SLURM_LOCALID", "0"}, {"OMPI_COMM_WORLD_RANK", "5"}, {"OMPI_COMM_WORLD_SIZE", "8"},
      {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}};
  const std::string error = error_of(vars);
  EXPECT_NE(error.find("SLURM_PROCID=1"), std::string::npos) << error;
  EXPECT_NE(error.find("LF_RANK_SOURCE=mpirun"), std::string::npos) << error;
  vars["LF_RANK_SOURCE"] = "mpirun";
  EXPECT_EQ(discover_rank_info(env_of(vars)).rank, 5);
}

TEST(RankInfo, MalformedValuesAreNamed) {
  EXPECT_NE(error_of({{"SLURM_PROCID", "x1"}, {"SLURM_NTASKS", "2"}}).find("SLURM_PROCID='x1'"),
            std::string::npos);
  EXPECT_NE(error_of({{"SLURM_PROCID", "2"}, {"SLURM_NTASKS", "2"}}).find("is not a rank of"),
            std::string::npos);
  EXPECT_NE(error_of({{"OMPI_COMM_WORLD_RANK", "0"}}).find("OMPI_COMM_WORLD_SIZE is not"),
            std::string::npos);
}

TEST(RankInfo, DeviceFromLocalRank) {
  EXPECT_EQ(device_for_local_rank(0, 8), 0);
  EXPECT_EQ(device_for_local_rank(7, 8), 7);
  try {
    device_for_local_rank(2, 2);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("local rank 2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("2 device(s)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(device_for_local_rank(0, 0), std::invalid_argument);
}

}  // namespace
}  // namespace lf::dist
