// Chunks of a sampling job: plan, resume, merge (see sample_parts.h).
#include "launch/sample_parts.h"

#include <fcntl.h>
#include <glog/logging.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/util/crash_point.h"
#include "core/util/fs.h"
#include "core/util/progress.h"
#include "core/util/sha256.h"
#include "core/util/strings.h"

namespace fs = std::filesystem;

namespace lf::launch {

namespace {

constexpr const char* kJobAttribute = "latentforge.job";
constexpr const char* kFirstAttribute = "latentforge.first_index";
constexpr const char* kClaimsDir = "claims";

// The chunk index of a file name "chunk-NNNNN.h5", or -1.
int64_t chunk_index(const std::string& name) {
  long long k = -1;
  int used = 0;
  if (std::sscanf(name.c_str(), "chunk-%lld.h5%n", &k, &used) == 1 && static_cast<size_t>(used) == name.size()) return k;
  return -1;
}

}  // namespace

SampleParts::SampleParts(std::string out_dir, ChunkPlan plan, std::string job)
    : out_dir_(std::move(out_dir)), plan_(plan), job_(std::move(job)), job_hash_(sha256_hex(job_)) {
  TORCH_CHECK(plan_.num >= 0 && plan_.chunk_size >= 1, "SampleParts: bad plan");
}

std::string SampleParts::dir() const { return (fs::path(out_dir_) / "parts").string(); }

std::string SampleParts::chunk_path(int64_t k) const {
  char name[48];
  std::snprintf(name, sizeof name, "chunk-%05lld.h5", static_cast<long long>(k));
  return (fs::path(dir()) / name).string();
}

std::string SampleParts::samples_path() const { return (fs::path(out_dir_) / "samples.h5").string(); }

bool SampleParts::exists(int64_t k) const { return fs::exists(chunk_path(k)); }

bool SampleParts::claim(int64_t k, const std::string& who) const {
  char name[48];
  std::snprintf(name, sizeof name, "chunk-%05lld.claim", static_cast<long long>(k));
  const std::string path = (fs::path(dir()) / kClaimsDir / name).string();
  const int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) {
    if (errno == EEXIST) return false;
    throw std::runtime_error(str(path, ": cannot create the claim of chunk ", k, ": ", std::strerror(errno)));
  }
  const std::string text = who + "\n";
  const ssize_t written = ::write(fd, text.data(), text.size());  // for people reading parts/; not needed
  (void)written;
  ::close(fd);
  return true;
}

bool SampleParts::is_done(int64_t k) const {
  const std::string path = chunk_path(k);
  if (!fs::exists(path)) return false;
  try {
    return data::read_samples_attribute(path, kJobAttribute) == job_hash_ &&
           data::read_samples_attribute(path, kFirstAttribute) == std::to_string(plan_.begin(k)) &&
           data::read_samples_info(path).num == plan_.count(k);
  } catch (const std::exception& e) {
    LOG(WARNING) << path << " cannot be read (" << e.what() << "); it is sampled again";
    return false;
  }
}

std::vector<int64_t> SampleParts::prepare() {
  fs::create_directories(dir());
  int64_t stale = 0;
  for (const auto& entry : fs::directory_iterator(dir())) {
    const std::string name = entry.path().filename().string();
    if (name == "job.json") continue;
    const int64_t k = chunk_index(name);
    if (k >= 0 && k < plan_.num_chunks() && is_done(k)) continue;
    // A temporary file of a killed run, or a chunk of another job (other seed, model, ...);
    // the claims of an earlier run (its unfinished chunks are to do again).
    fs::remove_all(entry.path());
    if (name != kClaimsDir) ++stale;
  }
  fs::create_directories(fs::path(dir()) / kClaimsDir);
  for (const auto& entry : fs::directory_iterator(out_dir_.empty() ? fs::path(".") : fs::path(out_dir_)))
    if (entry.path().filename().string().rfind("samples.h5.tmp-", 0) == 0) fs::remove(entry.path());
  if (stale > 0) LOG(INFO) << "sample: removed " << stale << " stale or unfinished file(s) from " << dir();
  nlohmann::json record = {{"sha256", job_hash_}, {"job", nlohmann::json::parse(job_)},
                           {"num", plan_.num}, {"chunk_size", plan_.chunk_size}, {"num_chunks", plan_.num_chunks()}};
  atomic_write_file((fs::path(dir()) / "job.json").string(), record.dump(2) + "\n");
  std::vector<int64_t> todo;
  for (int64_t k = 0; k < plan_.num_chunks(); ++k)
    if (!fs::exists(chunk_path(k))) todo.push_back(k);
  return todo;
}

std::unique_ptr<data::SamplesWriter> SampleParts::open_chunk(int64_t k, const std::vector<int64_t>& image_shape,
                                                             const std::vector<std::string>& label_names) const {
  return std::make_unique<data::SamplesWriter>(
      chunk_path(k), plan_.count(k), image_shape, label_names,
      std::map<std::string, std::string>{{kJobAttribute, job_hash_}, {kFirstAttribute, std::to_string(plan_.begin(k))}});
}

void SampleParts::commit_chunk(data::SamplesWriter& writer) const { writer.commit("samples.chunk_written"); }

void SampleParts::merge(const std::vector<int64_t>& image_shape, const std::vector<std::string>& label_names,
                        const std::map<std::string, std::string>& attributes, Progress* progress) const {
  data::SamplesWriter out(samples_path(), plan_.num, image_shape, label_names, attributes);
  for (int64_t k = 0; k < plan_.num_chunks(); ++k) {
    if (!is_done(k))
      throw std::runtime_error(str(chunk_path(k), ": missing or not of this job when merging; re-run sample"));
    data::SamplesFile part = data::read_samples_file(chunk_path(k));
    out.write(plan_.begin(k), part.images, part.labels);
    if (progress) progress->add(plan_.count(k));
  }
  out.commit("samples.merge");
  crash_point("samples.merged");
  fs::remove_all(dir());
}

}  // namespace lf::launch
