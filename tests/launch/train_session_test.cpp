// The pieces of a training session that resume and stop depend on, in one process: choosing
// the checkpoint to resume (--resume ""|auto|PATH), frozen keys, metrics.jsonl truncation on
// resume, stop signals, and leftover temporary checkpoint directories. The end-to-end
// behaviour is in tests/e2e/train_*.sh.
#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/test_util.h"
#include "core/util/fs.h"
#include "distributed/fake_communicator.h"
#include "distributed/local_communicator.h"
#include "launch/checkpoint.h"
#include "launch/metrics.h"
#include "launch/signals.h"
#include "launch/train_parts.h"
#include "launch/train_session.h"

namespace fs = std::filesystem;

namespace lf::launch {
namespace {

std::string fresh_dir(const std::string& name) {
  const char* base = std::getenv("LF_TEST_TMP");
  fs::path dir = fs::path(base ? base : fs::temp_directory_path().string()) / ("session_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

// A checkpoint as TrainSession::save_checkpoint writes it: kind and config in state.json, and
// the files every 'ldm' checkpoint has.
std::vector<CheckpointFile> ldm_files(int64_t step) {
  std::vector<CheckpointFile> files;
  for (const char* f : {"model.safetensors", "optimizer.safetensors", "ema.safetensors"})
    files.push_back({f, [step](const std::string& p) { std::ofstream(p) << "weights " << step; }});
  return files;
}
std::string save_ldm(CheckpointManager& m, int64_t step, const nlohmann::json& config) {
  return m.save(step, {{"kind", "ldm"}, {"config", config}}, ldm_files(step), 0);
}

std::string message_of(const std::function<void()>& f) { return lf::testing::error_of(f); }

struct SessionFixture {
  TrainLoopConfig loop;
  DistConfig dist;
  dist::LocalCommunicator comm;
  nlohmann::json config = {{"model.channels", "16"}, {"train.batch_size", "8"}, {"train.steps", "10"}};
  explicit SessionFixture(const std::string& name) { loop.run_dir = fresh_dir(name); }
  TrainSession session() { return TrainSession("ldm", loop, dist, comm, config); }
};

TEST(TrainSession, ResumeAutoTakesNewestValidAndFreshWhenNone) {
  SessionFixture f("auto");
  EXPECT_FALSE(f.session().resolve_resume("auto").has_value());
  CheckpointManager m(f.loop.run_dir, 5, 0);
  save_ldm(m, 2, f.config);
  std::string newest = (fs::path(m.dir()) / "step-00000004").string();
  save_ldm(m, 4, f.config);
  fs::remove(fs::path(newest) / "state.json");  // as a crash mid-deletion leaves it
  auto chosen = f.session().resolve_resume("auto");
  ASSERT_TRUE(chosen.has_value());
  EXPECT_EQ(fs::path(*chosen).filename(), "step-00000002");
}

TEST(TrainSession, FreshStartRefusesARunDirWithCheckpoints) {
  SessionFixture f("fresh");
  CheckpointManager m(f.loop.run_dir, 5, 0);
  save_ldm(m, 1, f.config);
  std::string msg = message_of([&] { f.session().resolve_resume(""); });
  EXPECT_NE(msg.find("already holds checkpoints"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--resume auto"), std::string::npos) << msg;
}

TEST(TrainSession, ResumePathMustBeAValidCheckpointOfThisKind) {
  SessionFixture f("path");
  CheckpointManager m(f.loop.run_dir, 5, 0);
  save_ldm(m, 1, f.config);
  std::string dir = (fs::path(m.dir()) / "step-00000001").string();
  EXPECT_EQ(*f.session().resolve_resume(dir), dir);

  std::string msg = message_of([&] { f.session().resolve_resume(f.loop.run_dir + "/nowhere"); });
  EXPECT_NE(msg.find("not a checkpoint directory"), std::string::npos) << msg;

  std::ofstream(dir + "/ema.safetensors", std::ios::app) << "!";
  msg = message_of([&] { f.session().resolve_resume(dir); });
  EXPECT_NE(msg.find("ema.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--resume " + dir), std::string::npos) << msg;

  CheckpointManager vae(fresh_dir("path_vae"), 5, 0);
  std::string vae_dir = vae.save(1, {{"kind", "vae"}, {"config", f.config}}, ldm_files(1), 0);
  msg = message_of([&] { f.session().resolve_resume(vae_dir); });
  EXPECT_NE(msg.find("'vae' checkpoint, not 'ldm'"), std::string::npos) << msg;
}

TEST(TrainSession, ResumingAnOlderCheckpointAbandonsTheLaterHistoryForAuto) {
  SessionFixture f("abandon");
  CheckpointManager m(f.loop.run_dir, 5, 0);
  std::string two = save_ldm(m, 2, f.config);
  for (int64_t s : {4, 6}) save_ldm(m, s, f.config);
  EXPECT_EQ(*f.session().resolve_resume(two), two);
  // A requeue passes --resume auto: it must continue from step 2's history, not jump to 6.
  EXPECT_EQ(*f.session().resolve_resume("auto"), two);
  std::vector<std::string> moved;
  for (const auto& e : fs::directory_iterator(m.dir())) {
    const std::string name = e.path().filename().string();
    if (name.rfind("abandoned-", 0) != 0) continue;
    for (const auto& inner : fs::directory_iterator(e.path())) moved.push_back(inner.path().filename().string());
  }
  std::sort(moved.begin(), moved.end());
  EXPECT_EQ(moved, (std::vector<std::string>{"step-00000004", "step-00000006"}));
  // Another run's checkpoint: every checkpoint of this run is another history.
  SessionFixture other("abandon_other");
  CheckpointManager om(other.loop.run_dir, 5, 0);
  save_ldm(om, 1, other.config);
  EXPECT_EQ(*other.session().resolve_resume(two), two);
  EXPECT_TRUE(om.list().empty());
  EXPECT_FALSE(other.session().resolve_resume("auto").has_value());
}

TEST(TrainSession, ResumeAutoSkipsAMalformedStateJsonInsteadOfFailing) {
  SessionFixture f("malformed");
  CheckpointManager m(f.loop.run_dir, 5, 0);
  std::string one = save_ldm(m, 1, f.config);
  std::string two = save_ldm(m, 2, f.config);
  auto state = nlohmann::json::parse(read_file(two + "/state.json"));
  state["kind"] = 7;  // resolve_resume once threw a JSON type error for the whole run here
  std::ofstream(two + "/state.json", std::ios::trunc) << state.dump();
  EXPECT_EQ(*f.session().resolve_resume("auto"), one);
  std::ofstream(two + "/state.json", std::ios::trunc) << "not json";
  EXPECT_EQ(*f.session().resolve_resume("auto"), one);
}

// Rank 0 sends the folder it chose: a rank whose own view would rebuild another path (here its
// run_dir has a newer checkpoint of its own) loads rank 0's.
TEST(TrainSession, EveryRankResumesTheFolderRankZeroChose) {
  const std::string base = fresh_dir("ranks");
  nlohmann::json config = {{"model.channels", "16"}};
  std::vector<std::string> chosen(2);
  auto world = dist::FakeWorld::create(2);
  auto errors = world->run([&](dist::Communicator& comm) {
    TrainLoopConfig loop;
    loop.run_dir = base + "/view" + std::to_string(comm.rank());
    CheckpointManager m(loop.run_dir, 5, 0);
    save_ldm(m, 1, config);
    if (comm.rank() == 1) save_ldm(m, 3, config);
    TrainSession session("ldm", loop, DistConfig{}, comm, config);
    chosen[comm.rank()] = session.resolve_resume("auto").value_or("");
  });
  for (const auto& e : errors) EXPECT_EQ(e, "");
  EXPECT_EQ(chosen[0], base + "/view0/checkpoints/step-00000001");
  EXPECT_EQ(chosen[1], chosen[0]);
}

TEST(TrainSession, RanksThatLoadedDifferentContentFailNamingBothRanksAndDigests) {
  const std::string base = fresh_dir("digest");
  const std::string same(64, 'a');
  std::string differ = same;
  differ[20] = 'b';
  for (bool equal : {true, false}) {
    auto world = dist::FakeWorld::create(2);
    auto errors = world->run([&](dist::Communicator& comm) {
      TrainLoopConfig loop;
      loop.run_dir = base;
      TrainSession session("ldm", loop, DistConfig{}, comm, nlohmann::json::object());
      session.check_same_checkpoint(comm.rank() == 1 && !equal ? differ : same, "RUN/checkpoints/step-00000004");
    });
    for (const auto& e : errors) {
      if (equal) {
        EXPECT_EQ(e, "");
        continue;
      }
      EXPECT_TRUE(lf::testing::contains(e, "what was loaded from RUN/checkpoints/step-00000004 differs between ranks"))
          << e;
      EXPECT_TRUE(lf::testing::contains(e, "rank 0 has sha256[16:32]=aaaaaaaaaaaaaaaa, rank 1 has "
                                           "sha256[16:32]=aaaabaaaaaaaaaaa")) << e;
    }
  }
}

TEST(TrainSession, FrozenKeyChangeIsNamedButStepsMayGrow) {
  SessionFixture f("frozen");
  CheckpointManager m(f.loop.run_dir, 5, 0);
  save_ldm(m, 1, f.config);
  f.config["train.steps"] = "20";  // not frozen
  EXPECT_TRUE(f.session().resolve_resume("auto").has_value());
  f.config["model.channels"] = "32";
  std::string msg = message_of([&] { f.session().resolve_resume("auto"); });
  EXPECT_NE(msg.find("model.channels = \"32\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("was trained with model.channels = \"16\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("step-00000001"), std::string::npos) << msg;
}

TEST(TrainSession, FrozenKeysCoverModelDiffusionBatchAndSeed) {
  auto frozen = frozen_keys_for("ldm");
  nlohmann::json saved = {{"model.channel_mult", "1,2"}, {"diffusion.timesteps", "1000"},
                          {"train.batch_size", "8"}, {"train.seed", "0"}, {"train.lr", "0.0002"}};
  for (const char* key : {"model.channel_mult", "diffusion.timesteps", "train.batch_size", "train.seed"}) {
    nlohmann::json current = saved;
    current[key] = "7";
    std::string msg = message_of([&] { check_frozen_keys(saved, current, frozen, "CKPT"); });
    EXPECT_NE(msg.find(std::string(key) + " = \"7\""), std::string::npos) << key << ": " << msg;
  }
  nlohmann::json current = saved;
  current["train.lr"] = "0.1";  // may change on resume
  EXPECT_NO_THROW(check_frozen_keys(saved, current, frozen, "CKPT"));
}

std::vector<int64_t> steps_in(const std::string& path) {
  std::vector<int64_t> out;
  std::istringstream in(read_file(path));
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line).at("step").get<int64_t>());
  return out;
}

TEST(Metrics, ResumeDropsLaterRecordsAndATornLine) {
  std::string path = fresh_dir("metrics") + "/metrics.jsonl";
  {
    MetricsWriter w;
    w.open(path, 0);
    for (int64_t s = 1; s <= 6; ++s) w.write({{"step", s}, {"loss", 1.0 / s}});
  }
  std::ofstream(path, std::ios::app) << "{\"step\": 7, \"lo";  // killed mid-write
  MetricsWriter w;
  w.open(path, 4);  // resumed from the checkpoint of step 4
  for (int64_t s = 5; s <= 7; ++s) w.write({{"step", s}});
  EXPECT_EQ(steps_in(path), (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7}));
}

TEST(Signals, TerminateBeatsRequeueAndResetForgets) {
  reset_stop_request();
  install_stop_handlers();
  EXPECT_EQ(local_stop_request(), StopRequest::kNone);
  std::raise(SIGUSR1);
  EXPECT_EQ(local_stop_request(), StopRequest::kRequeue);
  std::raise(SIGTERM);  // the first SIGTERM only records (a second would exit)
  EXPECT_EQ(local_stop_request(), StopRequest::kTerminate);
  std::raise(SIGUSR1);
  EXPECT_EQ(local_stop_request(), StopRequest::kTerminate);
  reset_stop_request();
  EXPECT_EQ(local_stop_request(), StopRequest::kNone);
  SessionFixture f("agree");
  std::raise(SIGUSR1);
  EXPECT_EQ(f.session().agree_stop(), StopRequest::kRequeue);  // one rank: its own request
  reset_stop_request();
  EXPECT_EQ(f.session().agree_stop(), StopRequest::kNone);
}

TEST(Checkpoint, CrashedWritersTemporaryDirsGoEvenWhenNothingIsPruned) {
  CheckpointManager m(fresh_dir("leftover"), 3, 0);
  fs::create_directories(fs::path(m.dir()) / ".tmp-step-00000002-999999999");
  std::ofstream(m.dir() + "/.tmp-step-00000002-999999999/model.safetensors") << "half";
  save_ldm(m, 1, nlohmann::json::object());  // keep_last 3: nothing to prune
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(m.dir())) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"step-00000001"});
}

TEST(LossWindow, MeansOverRanksAndStepsThenStartsAfresh) {
  auto world = dist::FakeWorld::create(2);
  auto errors = world->run([](dist::Communicator& comm) {
    LossWindow w(2);
    const double r = comm.rank();
    w.add({1.0 + r, 10.0});  // step 1: ranks hold 1 and 2
    w.add({3.0 + r, 20.0});  // step 2: ranks hold 3 and 4
    std::vector<double> m = w.take_means(comm);
    EXPECT_DOUBLE_EQ(m[0], 2.5);   // (1 + 2 + 3 + 4) / (2 ranks x 2 steps)
    EXPECT_DOUBLE_EQ(m[1], 15.0);
    w.add({7.0, 1.0});             // a new window: one step
    m = w.take_means(comm);
    EXPECT_DOUBLE_EQ(m[0], 7.0);
    EXPECT_DOUBLE_EQ(m[1], 1.0);
  });
  for (size_t r = 0; r < errors.size(); ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

}  // namespace
}  // namespace lf::launch
