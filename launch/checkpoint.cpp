// Atomic checkpoint directories (see checkpoint.h for the protocol).
#include "launch/checkpoint.h"

#include <fcntl.h>  // AT_FDCWD
#include <glog/logging.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE (glibc >= 2.28)
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>

#include "core/util/crash_point.h"
#include "core/util/fs.h"
#include "core/util/json.h"
#include "core/util/sha256.h"
#include "core/util/strings.h"
#include "launch/checkpoint_state.h"

namespace fs = std::filesystem;

namespace lf::launch {

namespace {
constexpr size_t kMaxStateBytes = 64 << 20;

constexpr const char* kIntentName = "resume-intent.json";  // an abandonment in progress
std::atomic<bool> g_use_exchange{true};

std::string folder_name(const std::string& dir) {
  fs::path p = fs::path(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

// Invalidates (state.json first, so a crash leaves an invalid folder, never a half-valid one)
// and deletes a folder; a failure to delete is only a warning (it is pruned later).
void discard(const std::string& path) {
  std::error_code ec;
  fs::remove(fs::path(path) / "state.json", ec);
  if (!ec) fsync_path(path);
  crash_point("ckpt.during_delete");
  fs::remove_all(path, ec);
  if (ec) LOG(WARNING) << "could not delete " << path << ": " << ec.message();
}

void rename_or_throw(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    throw std::runtime_error(str("cannot rename ", from, " to ", to, ": ", std::strerror(errno)));
}

// Atomically swaps two directories; false when the file system (or the kernel) cannot.
bool exchange(const std::string& a, const std::string& b) {
  if (!g_use_exchange.load()) return false;
  if (::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) == 0) return true;
  if (errno == EINVAL || errno == ENOSYS || errno == ENOTSUP) return false;
  throw std::runtime_error(str("cannot exchange ", a, " and ", b, ": ", std::strerror(errno)));
}

std::string utc_stamp() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

bool is_valid(const std::string& dir) {
  try {
    CheckpointManager::verify(dir);
    return true;
  } catch (const std::runtime_error&) {
    return false;
  }
}

void check_files_match(const std::string& dir, const nlohmann::json& files) {
  for (const auto& [name, info] : files.items()) {
    fs::path p = fs::path(dir) / name;
    std::error_code ec;
    if (!fs::is_regular_file(p, ec)) throw std::runtime_error(str(p.string(), ": listed in state.json but missing"));
    const uint64_t want_bytes = info["bytes"].get<uint64_t>();
    const uint64_t bytes = fs::file_size(p);
    if (bytes != want_bytes)
      throw std::runtime_error(str(p.string(), ": ", bytes, " bytes, state.json says ", want_bytes));
    const std::string got = sha256_file(p.string());
    const std::string want = info["sha256"].get<std::string>();
    if (got != want)
      throw std::runtime_error(str(p.string(), ": checksum ", got.substr(0, 12), "… does not match state.json's ",
                                   want.substr(0, 12), "… (corrupted)"));
  }
}

}  // namespace

void CheckpointManager::use_rename_exchange(bool enabled) { g_use_exchange = enabled; }

CheckpointManager::CheckpointManager(std::string run_dir, int64_t keep_last, int64_t milestone_every)
    : run_dir_(std::move(run_dir)),
      ckpt_dir_((fs::path(run_dir_) / "checkpoints").string()),
      keep_last_(std::max<int64_t>(1, keep_last)),
      milestone_every_(milestone_every) {}

std::string CheckpointManager::name_for_step(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

std::vector<std::pair<int64_t, std::string>> CheckpointManager::list() const {
  std::map<int64_t, std::string> canonical, parked;
  if (!fs::is_directory(ckpt_dir_)) return {};
  for (const auto& e : fs::directory_iterator(ckpt_dir_)) {
    const std::string name = e.path().filename().string();
    std::error_code ec;
    if (!e.is_directory(ec)) continue;
    std::optional<int64_t> step = step_of_checkpoint_name(name);
    if (!step) continue;
    if (starts_with(name, "step-")) canonical[*step] = e.path().string();
    else if (starts_with(name, ".old-") && !parked.count(*step)) parked[*step] = e.path().string();
  }
  for (const auto& [step, path] : parked) canonical.emplace(step, path);
  return {canonical.begin(), canonical.end()};
}

void CheckpointManager::verify(const std::string& dir) {
  const std::string state_path = (fs::path(dir) / "state.json").string();
  try {
    std::optional<int64_t> step = step_of_checkpoint_name(folder_name(dir));
    if (!step)
      throw std::runtime_error(str(dir, ": a checkpoint folder is named step-NNNNNNNN after its step; this one is '",
                                   folder_name(dir), "' (rename it back)"));
    if (!fs::exists(state_path))
      throw std::runtime_error(str(dir, ": no state.json (an incomplete or deleted checkpoint)"));
    nlohmann::json state;
    try {
      state = read_state(dir);
    } catch (const std::exception& e) {
      throw std::runtime_error(str(state_path, ": unreadable or not valid JSON: ", e.what()));
    }
    check_state_structure(state, *step, state_path);
    check_files_match(dir, state["files"]);
  } catch (const std::runtime_error&) {
    throw;
  } catch (const std::exception& e) {  // file system errors, a JSON type error missed above
    throw std::runtime_error(str(dir, ": ", e.what()));
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

std::string CheckpointManager::save(int64_t step, nlohmann::json state, const std::vector<CheckpointFile>& files,
                                    uint64_t expected_bytes) {
  const std::string tmp_dir = begin_save(step, expected_bytes);
  nlohmann::json table = nlohmann::json::object();
  for (const auto& f : files) {
    std::string path = (fs::path(tmp_dir) / f.name).string();
    f.write(path);
    fsync_path(path);
    table[f.name] = file_record(path);
  }
  return finish_save(step, std::move(state), tmp_dir, std::move(table), /*rehash=*/true);
}

std::string CheckpointManager::begin_save(int64_t step, uint64_t expected_bytes) {
  fs::create_directories(ckpt_dir_);
  uint64_t need = expected_bytes + expected_bytes / 10 + (64ull << 20);
  uint64_t free_bytes = free_disk_bytes(ckpt_dir_);
  if (free_bytes < need)
    throw std::runtime_error(str(ckpt_dir_, ": only ", human_bytes(double(free_bytes)), " free, a checkpoint needs about ",
                                 human_bytes(double(need)), "; free space or move the run directory"));
  const std::string tmp_dir = (fs::path(ckpt_dir_) / str(".tmp-", name_for_step(step), "-", ::getpid())).string();
  fs::remove_all(tmp_dir);
  fs::create_directories(tmp_dir);
  return tmp_dir;
}

nlohmann::json CheckpointManager::file_record(const std::string& path) {
  return {{"sha256", sha256_file(path)}, {"bytes", fs::file_size(path)}};
}

std::string CheckpointManager::finish_save(int64_t step, nlohmann::json state, const std::string& tmp_dir,
                                           nlohmann::json table, bool rehash) {
  crash_point("ckpt.after_tensors");
  const std::string final_dir = (fs::path(ckpt_dir_) / name_for_step(step)).string();
  state["format_version"] = kCheckpointFormatVersion;
  state["step"] = step;
  state["files"] = table;
  atomic_write_file((fs::path(tmp_dir) / "state.json").string(), state.dump(2));
  fsync_path(tmp_dir);
  if (rehash) {
    verify(tmp_dir);  // whole and well-formed before it may replace anything
  } else {
    // The writers hashed their own fsynced files; here every listed file must be present at its size
    // (a rank that wrote elsewhere — a run directory not shared between hosts — fails here).
    const std::string where = (fs::path(tmp_dir) / "state.json").string();
    check_state_structure(state, step, where);
    for (const auto& [name, info] : table.items()) {
      std::error_code ec;
      const fs::path p = fs::path(tmp_dir) / name;
      if (!fs::is_regular_file(p, ec))
        throw std::runtime_error(str(p.string(), ": written by another rank but not found here; the run directory must "
                                                 "be on a file system every rank shares"));
      if (fs::file_size(p) != info["bytes"].get<uint64_t>())
        throw std::runtime_error(str(p.string(), ": ", fs::file_size(p), " bytes, its writer reported ",
                                     info["bytes"].get<uint64_t>()));
    }
  }
  crash_point("ckpt.before_rename");
  put_in_place(tmp_dir, final_dir, step);
  prune(step);
  return final_dir;
}

void CheckpointManager::put_in_place(const std::string& tmp_dir, const std::string& final_dir, int64_t step) {
  if (!fs::exists(final_dir)) {
    rename_or_throw(tmp_dir, final_dir);
    fsync_path(ckpt_dir_);
    return;
  }
  // Re-saving a step: the folder of that step is valid at every instant.
  if (exchange(tmp_dir, final_dir)) {
    fsync_path(ckpt_dir_);
    crash_point("ckpt.after_exchange");
    discard(tmp_dir);  // now the old one
    return;
  }
  const std::string parked = (fs::path(ckpt_dir_) / str(".old-", name_for_step(step), "-", ::getpid())).string();
  rename_or_throw(final_dir, parked);  // still valid, and list() shows it for `step`
  fsync_path(ckpt_dir_);
  crash_point("ckpt.between_renames");
  rename_or_throw(tmp_dir, final_dir);
  fsync_path(ckpt_dir_);
  discard(parked);
}

std::vector<std::string> CheckpointManager::recover() {
  std::vector<std::string> log;
  if (!fs::is_directory(ckpt_dir_)) return log;
  std::map<int64_t, std::vector<std::string>> parked, complete_tmp;
  for (const auto& e : fs::directory_iterator(ckpt_dir_)) {
    const std::string name = e.path().filename().string();
    std::optional<int64_t> step = step_of_checkpoint_name(name);
    if (!step || fs::exists(fs::path(ckpt_dir_) / name_for_step(*step))) continue;
    if (starts_with(name, ".old-")) parked[*step].push_back(e.path().string());
    if (starts_with(name, ".tmp-") && is_valid(e.path().string())) complete_tmp[*step].push_back(e.path().string());
  }
  for (const auto& [step, olds] : parked) {
    // The new folder when it was complete (the replacement had verified it), else the old one.
    std::string chosen;
    if (complete_tmp.count(step)) chosen = complete_tmp[step].front();
    for (const auto& o : olds)
      if (chosen.empty() && is_valid(o)) chosen = o;
    if (chosen.empty()) continue;
    const std::string final_dir = (fs::path(ckpt_dir_) / name_for_step(step)).string();
    rename_or_throw(chosen, final_dir);
    fsync_path(ckpt_dir_);
    log.push_back(str("completed an interrupted replacement of ", final_dir, " with ", folder_name(chosen)));
  }
  // An abandonment that a crash interrupted is finished (abandon_after writes its intent first).
  const fs::path intent = fs::path(ckpt_dir_) / kIntentName;
  if (fs::exists(intent)) {
    int64_t step = -1;
    try {
      step = nlohmann::json::parse(read_file(intent.string())).at("step").get<int64_t>();
    } catch (const std::exception& e) {
      throw std::runtime_error(str(intent.string(), ": unreadable (", e.what(), "); it records a resume whose later "
                                   "checkpoints were being moved aside: move them to checkpoints/abandoned-*/ by hand "
                                   "and delete this file"));
    }
    for (const auto& moved : abandon_after(step)) log.push_back(str("finished moving aside ", moved));
  }
  return log;
}

std::vector<std::string> CheckpointManager::abandon_after(int64_t step) {
  std::vector<std::pair<int64_t, std::string>> later;
  for (const auto& [s, path] : list())
    if (s > step) later.emplace_back(s, path);
  const fs::path intent = fs::path(ckpt_dir_) / kIntentName;
  std::vector<std::string> moved;
  if (!later.empty()) {
    atomic_write_file(intent.string(), nlohmann::json{{"step", step}}.dump());
    fs::path dest = fs::path(ckpt_dir_) / ("abandoned-" + utc_stamp());
    for (int k = 2; fs::exists(dest); ++k) dest = fs::path(ckpt_dir_) / str("abandoned-", utc_stamp(), "-", k);
    fs::create_directories(dest);
    for (const auto& [s, path] : later) {
      const std::string to = (dest / name_for_step(s)).string();
      rename_or_throw(path, to);
      crash_point("ckpt.during_abandon");
      moved.push_back(to);
    }
    fsync_path(dest.string());
  }
  if (fs::exists(intent)) {
    fs::remove(intent);
    fsync_path(ckpt_dir_);
  }
  return moved;
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
  for (size_t i = 0; i < n_delete; ++i) discard(deletable[i].second);
  remove_leftovers();
  fsync_path(ckpt_dir_);
}

void CheckpointManager::remove_leftovers() {
  // Temporary folders of crashed writers (each as large as a checkpoint), and old folders of
  // finished replacements; a parked folder whose step has no step-* yet is recover()'s to use.
  const std::string own_suffix = str("-", ::getpid());
  for (const auto& e : fs::directory_iterator(ckpt_dir_)) {
    const std::string name = e.path().filename().string();
    const bool own = name.size() >= own_suffix.size() &&
                     name.compare(name.size() - own_suffix.size(), own_suffix.size(), own_suffix) == 0;
    if (own) continue;
    bool leftover = starts_with(name, ".tmp-");
    if (starts_with(name, ".old-")) {
      std::optional<int64_t> step = step_of_checkpoint_name(name);
      leftover = step && fs::exists(fs::path(ckpt_dir_) / name_for_step(*step));
    }
    if (!leftover) continue;
    std::error_code ec;
    fs::remove_all(e.path(), ec);
    if (ec) LOG(WARNING) << "could not delete leftover " << e.path().string() << ": " << ec.message();
  }
}

}  // namespace lf::launch
