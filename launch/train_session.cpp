// TrainSession: resume, stop agreement, checkpoints and progress (see train_session.h).
#include "launch/train_session.h"

#include <glog/logging.h>

#include <cstdio>
#include <filesystem>

#include "core/util/crash_point.h"
#include "core/util/fs.h"
#include "core/util/strings.h"
#include "distributed/agreement.h"
#include "launch/config_registry.h"

namespace fs = std::filesystem;

namespace lf::launch {

std::vector<std::string> frozen_keys_for(const std::string& kind) {
  if (kind == "vae")
    return {"vae.", "vae_train.batch_size", "vae_train.seed", "data.source", "data.split", "data.limit",
            "data.image_size", "data.color"};
  return {"model.", "diffusion.", "train.batch_size", "train.seed", "train.label_dropout"};
}

void check_frozen_keys(const nlohmann::json& saved, const nlohmann::json& current,
                       const std::vector<std::string>& frozen, const std::string& checkpoint) {
  for (const auto& [key, value] : current.items()) {
    bool is_frozen = false;
    for (const auto& f : frozen)
      is_frozen = is_frozen || (f.back() == '.' ? key.rfind(f, 0) == 0 : key == f);
    if (!is_frozen || !saved.contains(key)) continue;
    if (saved[key] != value)
      throw UsageError(str(key, " = ", value.dump(), " but the checkpoint ", checkpoint, " was trained with ", key,
                           " = ", saved[key].dump(), "; this key may not change on resume (start a new run_dir, "
                           "or use train.init_from to fine-tune from its weights)"));
  }
}

TrainSession::TrainSession(std::string kind, const TrainLoopConfig& loop, const DistConfig& dist,
                           dist::Communicator& cpu_comm, nlohmann::json config_json)
    : kind_(std::move(kind)),
      loop_(loop),
      dist_(dist),
      comm_(cpu_comm),
      config_json_(std::move(config_json)),
      checkpoints_(loop.run_dir, loop.keep_last, loop.milestone_every) {
  // Now rather than in begin(): a stop signal during the start-up (which may load a large
  // cache or checkpoint for minutes) would otherwise kill the process by its default action,
  // without a checkpoint and without the requeue exit code.
  install_stop_handlers();
}

void TrainSession::lock_run_dir(bool break_lock) {
  if (comm_.rank() != 0) return;
  lock_ = RunDirLock::acquire(loop_.run_dir, loop_.section + ".run_dir", break_lock,
                              kind_ == "vae" ? "latentforge vae train" : "latentforge train");
}

namespace {

std::string without_trailing_slash(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

bool same_folder(const std::string& a, const std::string& b) {
  std::error_code ec1, ec2;
  fs::path ca = fs::weakly_canonical(without_trailing_slash(a), ec1);
  fs::path cb = fs::weakly_canonical(without_trailing_slash(b), ec2);
  return !ec1 && !ec2 && ca == cb;
}

}  // namespace

std::string TrainSession::choose_checkpoint(const std::string& flag) {
  for (const auto& line : checkpoints_.recover()) LOG(WARNING) << line;
  std::string chosen;
  if (flag.empty()) {
    if (!checkpoints_.list().empty())
      throw UsageError(str(loop_.run_dir, " already holds checkpoints; pass --resume auto to continue it, "
                           "or choose another run_dir"));
    return chosen;
  }
  if (flag == "auto") {
    std::vector<std::string> warnings;
    auto latest = checkpoints_.latest_valid(&warnings);
    for (const auto& w : warnings) LOG(WARNING) << w;
    if (!latest) {
      LOG(INFO) << "--resume auto: no valid checkpoint in " << checkpoints_.dir() << ", starting fresh";
      return chosen;
    }
    chosen = *latest;
  } else {
    if (!fs::is_directory(flag)) throw UsageError(str("--resume ", flag, ": not a checkpoint directory"));
    try {
      CheckpointManager::verify(flag);
    } catch (const std::runtime_error& e) {
      throw UsageError(str("--resume ", flag, ": ", e.what()));
    }
    chosen = without_trailing_slash(flag);
  }
  auto state = CheckpointManager::read_state(chosen);  // verified: kind and step are well-formed
  if (state["kind"].get<std::string>() != kind_)
    throw UsageError(str(chosen, " is a '", state["kind"].get<std::string>(), "' checkpoint, not '", kind_, "'"));
  check_frozen_keys(state.value("config", nlohmann::json::object()), config_json_, frozen_keys_for(kind_), chosen);
  // The history being resumed is the run's from now on: a later --resume auto must not jump
  // to checkpoints of the abandoned one (docs/cli.md, "Resuming").
  const int64_t step = state["step"].get<int64_t>();
  const bool ours = same_folder(fs::path(chosen).parent_path().string(), checkpoints_.dir());
  for (const auto& moved : checkpoints_.abandon_after(ours ? step : -1))
    LOG(WARNING) << "resuming " << chosen << " at step " << step
                 << ": moved a later checkpoint aside (not in the history being resumed) to " << moved;
  return chosen;
}

std::optional<std::string> TrainSession::resolve_resume(const std::string& flag) {
  // Rank 0 decides and sends the path itself: ranks that rebuilt it from the step could load
  // another folder than the one rank 0 verified.
  int64_t status = -1;  // -2: refused, -1: fresh, 1: resume
  std::string error;
  std::string chosen;
  if (comm_.rank() == 0) {
    try {
      chosen = choose_checkpoint(flag);
      status = chosen.empty() ? -1 : 1;
    } catch (const std::exception& e) {
      error = e.what();
      status = -2;
    }
  }
  if (comm_.world_size() > 1) {
    const auto deadline = dist::Deadline::after(dist::Seconds(dist_.checkpoint_timeout_s));
    at::Tensor t = at::tensor({status}, at::kLong);
    comm_.broadcast(t, 0, deadline, "broadcast of the resume decision (rank 0 verifies the checkpoint)");
    status = t.item<int64_t>();
    chosen = dist::broadcast_string(comm_, chosen, 0, deadline, "broadcast of the checkpoint to resume");
  }
  if (status == -2) {
    if (comm_.rank() == 0) throw UsageError(error);
    throw std::runtime_error("rank 0 refused to resume (see its message)");
  }
  if (status < 0) return std::nullopt;
  return chosen;
}

void TrainSession::check_same_checkpoint(const std::string& digest, const std::string& checkpoint) {
  if (comm_.world_size() == 1) return;
  std::vector<int64_t> words(4, 0);
  for (size_t i = 0; i < words.size(); ++i)
    words[i] = static_cast<int64_t>(std::stoull(digest.substr(16 * i, 16), nullptr, 16));
  dist::verify_same_on_all_ranks(comm_, words, {"sha256[0:16]", "sha256[16:32]", "sha256[32:48]", "sha256[48:64]"},
                                 str("what was loaded from ", checkpoint), /*hex=*/true,
                                 "every rank must load the checkpoint rank 0 verified: the ranks read different "
                                 "files under that path (a node-local run directory, or one written meanwhile)");
}

void TrainSession::wait_for_root(const std::string& what) {
  if (comm_.world_size() == 1) return;
  comm_.barrier(dist::Deadline::after(dist::Seconds(dist_.checkpoint_timeout_s)), what);
}

void TrainSession::begin(int64_t start_step, double prior_seconds) {
  start_step_ = start_step;
  prior_seconds_ = prior_seconds;
  begin_time_ = std::chrono::steady_clock::now();
  if (is_root()) {
    fs::create_directories(loop_.run_dir);
    metrics_.open((fs::path(loop_.run_dir) / "metrics.jsonl").string(), start_step);
  }
  window_start_ = std::chrono::steady_clock::now();
}

double TrainSession::train_seconds() const {
  return prior_seconds_ + std::chrono::duration<double>(std::chrono::steady_clock::now() - begin_time_).count();
}

StopRequest TrainSession::agree_stop() {
  at::Tensor flag = at::tensor({static_cast<int64_t>(local_stop_request())}, at::kLong);
  if (comm_.world_size() > 1) comm_.all_reduce(flag, dist::ReduceOp::kMax, "agreement on stop signals");
  return static_cast<StopRequest>(flag.item<int64_t>());
}

void TrainSession::stamp(nlohmann::json& state) const {
  state["kind"] = kind_;
  state["config"] = config_json_;
  state["world_size"] = comm_.world_size();
  state["train_seconds"] = train_seconds();
}

std::string TrainSession::write_checkpoint(int64_t step, nlohmann::json state, const std::vector<CheckpointFile>& files,
                                           uint64_t expected_bytes, const char* how) {
  auto t0 = std::chrono::steady_clock::now();
  std::string dir = checkpoints_.save(step, std::move(state), files, expected_bytes);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  LOG(INFO) << "checkpoint " << dir << " written and verified in " << int(s * 1000) << " ms" << how;
  return dir;
}

std::string TrainSession::save_checkpoint(int64_t step, nlohmann::json state,
                                          const std::vector<CheckpointFile>& files, uint64_t expected_bytes) {
  std::string dir;
  std::string error;
  if (is_root()) {
    stamp(state);
    try {
      wait_checkpoint();
      dir = write_checkpoint(step, std::move(state), files, expected_bytes, "");
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  // No rank continues before the checkpoint is durable (or has failed everywhere).
  at::Tensor ok = at::tensor({int64_t(error.empty() ? 1 : 0)}, at::kLong);
  if (comm_.world_size() > 1) {
    auto deadline = dist::Deadline::after(dist::Seconds(dist_.checkpoint_timeout_s));
    comm_.broadcast(ok, 0, deadline, str("broadcast after the checkpoint of step ", step));
  }
  if (!error.empty()) throw std::runtime_error(str("checkpoint of step ", step, " failed: ", error));
  if (ok.item<int64_t>() == 0) throw std::runtime_error(str("rank 0 failed to write the checkpoint of step ", step));
  return dir;
}

std::string TrainSession::save_checkpoint_sharded(int64_t step, nlohmann::json state,
                                                  const std::vector<CheckpointFile>& files,
                                                  const nlohmann::json& shards, uint64_t expected_bytes) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto deadline = dist::Deadline::after(dist::Seconds(dist_.checkpoint_timeout_s));
  const std::string what = str("the sharded checkpoint of step ", step);
  // 1. Rank 0 makes the temporary folder; every rank learns it (or rank 0's error).
  std::string tmp_dir, error;
  if (is_root()) {
    try {
      wait_checkpoint();
      tmp_dir = checkpoints_.begin_save(step, expected_bytes);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  const std::string decided = dist::broadcast_string(comm_, error.empty() ? "ok:" + tmp_dir : "error:" + error, 0,
                                                     deadline, "broadcast of the folder of " + what);
  if (decided.rfind("error:", 0) == 0)
    throw std::runtime_error(str("checkpoint of step ", step, " failed on rank 0: ", decided.substr(6)));
  tmp_dir = decided.substr(3);
  // 2. Every rank writes and hashes its files.
  nlohmann::json mine = nlohmann::json::object();
  try {
    for (const auto& f : files) {
      const std::string path = (fs::path(tmp_dir) / f.name).string();
      f.write(path);
      fsync_path(path);
      mine["files"][f.name] = CheckpointManager::file_record(path);
    }
    crash_point("ckpt.shards_written");
  } catch (const std::exception& e) {
    mine = {{"error", e.what()}};
  }
  const std::vector<std::string> parts = dist::all_gather_strings(comm_, mine.dump(), deadline, "gather of " + what);
  // 3. Rank 0 commits: state.json last, then the folder in place.
  std::string dir;
  if (is_root()) {
    try {
      nlohmann::json table = nlohmann::json::object();
      for (size_t r = 0; r < parts.size(); ++r) {
        const nlohmann::json part = nlohmann::json::parse(parts[r]);
        if (part.contains("error")) throw std::runtime_error(str("rank ", r, ": ", part["error"].get<std::string>()));
        if (part.contains("files"))
          for (const auto& [name, rec] : part["files"].items()) table[name] = rec;
      }
      stamp(state);
      state["shards"] = shards;
      dir = checkpoints_.finish_save(step, std::move(state), tmp_dir, std::move(table), /*rehash=*/false);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  at::Tensor ok = at::tensor({int64_t(error.empty() ? 1 : 0)}, at::kLong);
  comm_.broadcast(ok, 0, deadline, str("broadcast after ", what));
  if (!error.empty()) throw std::runtime_error(str("checkpoint of step ", step, " failed: ", error));
  if (ok.item<int64_t>() == 0) throw std::runtime_error(str("the checkpoint of step ", step, " failed (see rank 0's message)"));
  if (is_root())
    LOG(INFO) << "checkpoint " << dir << " written by " << comm_.world_size() << " ranks in parallel in "
              << int(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() * 1000) << " ms";
  return dir;
}

void TrainSession::save_checkpoint_async(int64_t step, nlohmann::json state, std::vector<CheckpointFile> files,
                                         uint64_t expected_bytes) {
  if (!is_root()) return;
  wait_checkpoint();
  stamp(state);
  auto done = std::make_shared<std::atomic<bool>>(false);
  auto error = std::make_shared<std::string>();
  writer_done_ = done;
  writer_error_ = error;
  writer_ = std::thread([this, step, state = std::move(state), files = std::move(files), expected_bytes, done,
                         error]() mutable {
    try {
      write_checkpoint(step, std::move(state), files, expected_bytes, " (in the background)");
    } catch (const std::exception& e) {
      *error = str("checkpoint of step ", step, " failed (written in the background): ", e.what());
    } catch (...) {
      *error = str("checkpoint of step ", step, " failed (written in the background): unknown exception");
    }
    done->store(true, std::memory_order_release);
  });
}

double TrainSession::wait_checkpoint() {
  if (!writer_.joinable()) return 0.0;
  auto t0 = std::chrono::steady_clock::now();
  writer_.join();
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::string error = std::move(*writer_error_);
  writer_done_.reset();
  writer_error_.reset();
  if (!error.empty()) throw std::runtime_error(error);
  return waited;
}

void TrainSession::check_checkpoint_writer() {
  if (writer_.joinable() && writer_done_->load(std::memory_order_acquire)) wait_checkpoint();
}

TrainSession::~TrainSession() {
  if (!writer_.joinable()) return;
  writer_.join();
  if (writer_error_ && !writer_error_->empty()) LOG(ERROR) << *writer_error_;
}

void TrainSession::write_metrics(const nlohmann::json& record) {
  if (is_root()) metrics_.write(record);
}

void TrainSession::record_step(int64_t step, int64_t total_steps, int64_t samples_per_step, const StepTimes& t,
                               nlohmann::json values) {
  window_steps_ += 1;
  window_times_.data += t.data;
  window_times_.forward_backward += t.forward_backward;
  window_times_.sync += t.sync;
  window_times_.optimizer += t.optimizer;
  if (step % loop_.log_every != 0 && step != total_steps) return;
  auto now = std::chrono::steady_clock::now();
  double elapsed = std::chrono::duration<double>(now - window_start_).count();
  double per_step = elapsed / std::max<int64_t>(1, window_steps_);
  double rate = samples_per_step / std::max(per_step, 1e-9);
  double eta = per_step * static_cast<double>(total_steps - step);
  auto ms = [&](double s) { return s * 1000.0 / std::max<int64_t>(1, window_steps_); };
  values["step"] = step;
  values["train_s"] = train_seconds();
  values["samples_per_s"] = rate;
  values["time_per_step_s"] = per_step;
  values["time_data_ms"] = ms(window_times_.data);
  values["time_fwd_bwd_ms"] = ms(window_times_.forward_backward);
  values["time_sync_ms"] = ms(window_times_.sync);
  values["time_optimizer_ms"] = ms(window_times_.optimizer);
  if (is_root()) {
    char line[512];
    std::snprintf(line, sizeof line,
                  "step %lld/%lld | loss %.5f | lr %.2e | gnorm %.3f | %.0f samples/s | data %.1f ms, fwd+bwd %.1f "
                  "ms, sync %.1f ms, opt %.1f ms | ETA %s",
                  static_cast<long long>(step), static_cast<long long>(total_steps), values.value("loss", 0.0),
                  values.value("lr", 0.0), values.value("grad_norm", 0.0), rate, ms(window_times_.data),
                  ms(window_times_.forward_backward), ms(window_times_.sync), ms(window_times_.optimizer),
                  human_duration(eta).c_str());
    LOG(INFO) << line;
    metrics_.write(values);
  }
  window_start_ = now;
  window_steps_ = 0;
  window_times_ = StepTimes{};
}

}  // namespace lf::launch
