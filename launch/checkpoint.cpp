// Atomic checkpoint directories (see checkpoint.h for the protocol).
#include "launch/checkpoint.h"

#include <glog/logging.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "core/util/crash_point.h"
#include "core/util/fs.h"
#include "core/util/json.h"
#include "core/util/sha256.h"
#include "core/util/strings.h"

namespace fs = std::filesystem;

namespace lf::launch {

namespace {
constexpr int kFormatVersion = 1;
constexpr size_t kMaxStateBytes = 64 << 20;
constexpr const char* kPrefix = "step-";
}  // namespace

CheckpointManager::CheckpointManager(std::string run_dir, int64_t keep_last, int64_t milestone_every)
    : run_dir_(std::move(run_dir)),
      ckpt_dir_((fs::path(run_dir_) / "checkpoints").string()),
      keep_last_(std::max<int64_t>(1, keep_last)),
      milestone_every_(milestone_every) {}

std::string CheckpointManager::name_for_step(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%s%08lld", kPrefix, static_cast<long long>(step));
  return buf;
}

std::vector<std::pair<int64_t, std::string>> CheckpointManager::list() const {
  std::vector<std::pair<int64_t, std::string>> out;
  if (!fs::is_directory(ckpt_dir_)) return out;
  for (const auto& e : fs::directory_iterator(ckpt_dir_)) {
    std::string name = e.path().filename().string();
    if (!e.is_directory() || name.rfind(kPrefix, 0) != 0) continue;
    char* end = nullptr;
    long long step = std::strtoll(name.c_str() + 5, &end, 10);
    if (*end != '\0') continue;
    out.emplace_back(step, e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void CheckpointManager::verify(const std::string& dir) {
  fs::path state_path = fs::path(dir) / "state.json";
  if (!fs::exists(state_path))
    throw std::runtime_error(str(dir, ": no state.json (an incomplete or deleted checkpoint)"));
  const nlohmann::json state = read_state(dir);
  if (!state.contains("files") || !state["files"].is_object())
    throw std::runtime_error(str(state_path.string(), ": missing the 'files' table of checksums"));
  const JsonFields files(state["files"], state_path.string(), "files", ErrorKind::kEnvironment);
  for (const auto& [name, info] : state["files"].items()) {
    // A listed name is a file of this directory, never a path out of it (/dev/zero would hash
    // forever).
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos)
      files.fail(name, "names no file of the checkpoint directory (expected a plain file name)");
    const JsonFields entry = files.object(name);
    const uint64_t want_bytes = static_cast<uint64_t>(entry.integer("bytes", 0));
    const std::string want = entry.string("sha256", 64);
    fs::path p = fs::path(dir) / name;
    std::error_code ec;
    if (!fs::is_regular_file(p, ec)) throw std::runtime_error(str(p.string(), ": listed in state.json but missing"));
    if (fs::file_size(p) != want_bytes)
      throw std::runtime_error(str(p.string(), ": ", fs::file_size(p), " bytes, state.json says ", want_bytes));
    std::string got = sha256_file(p.string());
    if (got != want)
      throw std::runtime_error(str(p.string(), ": checksum ", got.substr(0, 12), "… does not match state.json's ",
                                   want.substr(0, 12), "… (corrupted)"));
  }
}

nlohmann::json CheckpointManager::read_state(const std::string& dir) {
  // Bounded (size, depth, duplicate keys): a damaged or crafted state.json is a clean error.
  const std::string path = (fs::path(dir) / "state.json").string();
  JsonLimits limits;
  limits.max_bytes = kMaxStateBytes;
  limits.error = ErrorKind::kEnvironment;
  return parse_json(read_file(path, kMaxStateBytes), path, limits);
}

std::optional<std::string> CheckpointManager::latest_valid(std::vector<std::string>* warnings) const {
  auto all = list();
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    try {
      verify(it->second);
      return it->second;
    } catch (const std::exception& e) {
      if (warnings) warnings->push_back(str("skipping invalid checkpoint ", e.what()));
    }
  }
  return std::nullopt;
}

std::string CheckpointManager::save(int64_t step, nlohmann::json state,
                                    const std::vector<CheckpointFile>& files, uint64_t expected_bytes) {
  fs::create_directories(ckpt_dir_);
  uint64_t need = expected_bytes + expected_bytes / 10 + (64ull << 20);
  uint64_t free_bytes = free_disk_bytes(ckpt_dir_);
  if (free_bytes < need)
    throw std::runtime_error(str(ckpt_dir_, ": only ", human_bytes(double(free_bytes)), " free, a checkpoint needs about ",
                                 human_bytes(double(need)), "; free space or move train.run_dir"));
  const std::string final_dir = (fs::path(ckpt_dir_) / name_for_step(step)).string();
  const std::string tmp_dir = (fs::path(ckpt_dir_) / str(".tmp-", name_for_step(step), "-", ::getpid())).string();
  fs::remove_all(tmp_dir);
  fs::create_directories(tmp_dir);

  nlohmann::json table = nlohmann::json::object();
  for (const auto& f : files) {
    std::string path = (fs::path(tmp_dir) / f.name).string();
    f.write(path);
    fsync_path(path);
    table[f.name] = {{"sha256", sha256_file(path)}, {"bytes", fs::file_size(path)}};
  }
  crash_point("ckpt.after_tensors");
  state["format_version"] = kFormatVersion;
  state["step"] = step;
  state["files"] = table;
  atomic_write_file((fs::path(tmp_dir) / "state.json").string(), state.dump(2));
  fsync_path(tmp_dir);
  crash_point("ckpt.before_rename");
  if (fs::exists(final_dir)) {
    // Re-saving a step (e.g. after a resume at that step): move the old one aside first.
    std::string old = final_dir + str(".old-", ::getpid());
    fs::rename(final_dir, old);
    fs::remove((fs::path(old) / "state.json"));
    fs::remove_all(old);
  }
  fs::rename(tmp_dir, final_dir);
  fsync_path(ckpt_dir_);
  verify(final_dir);
  prune(step);
  return final_dir;
}

void CheckpointManager::prune(int64_t newest_step) {
  auto all = list();
  std::vector<std::pair<int64_t, std::string>> deletable;
  for (const auto& [step, path] : all) {
    if (step > newest_step) continue;  // a later step (from an older timeline) is left alone
    if (milestone_every_ > 0 && step % milestone_every_ == 0) continue;
    deletable.emplace_back(step, path);
  }
  size_t n_delete = static_cast<int64_t>(deletable.size()) > keep_last_
                        ? deletable.size() - static_cast<size_t>(keep_last_)
                        : 0;
  for (size_t i = 0; i < n_delete; ++i) {
    const std::string& path = deletable[i].second;
    // Invalidate first (state.json), then delete the rest: never a half-deleted valid one.
    fs::remove(fs::path(path) / "state.json");
    fsync_path(path);
    crash_point("ckpt.during_delete");
    std::error_code ec;
    fs::remove_all(path, ec);
    if (ec) LOG(WARNING) << "could not delete old checkpoint " << path << ": " << ec.message();
  }
  // Leftover temporary directories of crashed writers (each as large as a checkpoint), also
  // when nothing was old enough to delete.
  bool removed = n_delete > 0;
  const std::string own_suffix = str("-", ::getpid());
  for (const auto& e : fs::directory_iterator(ckpt_dir_)) {
    std::string name = e.path().filename().string();
    bool own = name.size() >= own_suffix.size() &&
               name.compare(name.size() - own_suffix.size(), own_suffix.size(), own_suffix) == 0;
    if (name.rfind(".tmp-", 0) == 0 && !own) {
      std::error_code ec;
      fs::remove_all(e.path(), ec);
      removed = true;
    }
  }
  if (removed) fsync_path(ckpt_dir_);
}

}  // namespace lf::launch
