// Shared parts of the fuzz targets: the table, outcome checking, scratch files (see
// fuzz_target.h).
#include "tests/fuzz/fuzz_target.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <typeinfo>

namespace lf::fuzz {

namespace fs = std::filesystem;

// Defined in targets/*.cpp.
void run_safetensors(const uint8_t*, size_t, const std::string&, const std::string&);
void run_vae_config(const uint8_t*, size_t, const std::string&, const std::string&);
void run_idx(const uint8_t*, size_t, const std::string&, const std::string&);
void run_idx_gz(const uint8_t*, size_t, const std::string&, const std::string&);
void run_image(const uint8_t*, size_t, const std::string&, const std::string&);
void run_manifest(const uint8_t*, size_t, const std::string&, const std::string&);
void run_state_json(const uint8_t*, size_t, const std::string&, const std::string&);
void run_ini(const uint8_t*, size_t, const std::string&, const std::string&);
void run_shard(const uint8_t*, size_t, const std::string&, const std::string&);
void run_text_embeddings(const uint8_t*, size_t, const std::string&, const std::string&);

const std::vector<Target>& targets() {
  static const std::vector<Target> all = {
      {"safetensors", "input.safetensors", run_safetensors},
      {"vae_config", "config.json", run_vae_config},
      {"idx", "train-images-idx3-ubyte", run_idx},
      {"idx_gz", "train-images-idx3-ubyte.gz", run_idx_gz},
      {"image", "input.png", run_image},
      {"manifest", "manifest.json", run_manifest},
      {"state_json", "state.json", run_state_json},
      {"ini", "config.ini", run_ini},
      {"shard", "shard-00000.h5", run_shard},
      {"text_embeddings", "embeddings.h5", run_text_embeddings},
  };
  return all;
}

const Target& target(const std::string& name) {
  for (const auto& t : targets())
    if (name == t.name) return t;
  throw std::invalid_argument("no fuzz target named '" + name + "'");
}

const std::string& scratch_dir() {
  static const std::string dir = [] {
    const char* base = std::getenv("LF_TEST_TMP");
    fs::path p = fs::path(base && *base ? base : "/tmp") / ("lf-fuzz-" + std::to_string(::getpid()));
    fs::create_directories(p);
    return p.string();
  }();
  return dir;
}

void write_file(const std::string& path, const void* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out) throw std::runtime_error(path + ": cannot write the fuzz input");
}

std::string run_checked(const Target& t, const uint8_t* data, size_t size, std::string* refusal) {
  // A fresh directory per input: nothing one input leaves behind changes the next.
  const fs::path dir = fs::path(scratch_dir()) / t.name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string path = (dir / t.file_name).string();
  // The message must name the input: its file, or a file in its private directory (a
  // checkpoint's listed file, the labels next to IDX images).
  auto judge = [&](const char* kind, const char* what) -> std::string {
    if (refusal) *refusal = what;
    if (std::strstr(what, dir.string().c_str()) != nullptr) return "";
    return std::string(kind) + " does not name the input " + path + ": " + what;
  };
  try {
    t.run(data, size, path, dir.string());
    return "";
  } catch (const std::invalid_argument& e) {
    return judge("std::invalid_argument", e.what());
  } catch (const std::runtime_error& e) {
    return judge("std::runtime_error", e.what());
  } catch (const std::exception& e) {
    return std::string("undocumented exception ") + typeid(e).name() + ": " + e.what();
  }
}

int64_t ByteReader::in_range(int64_t lo, int64_t hi) {
  uint64_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | byte();
  return lo + static_cast<int64_t>(v % static_cast<uint64_t>(hi - lo + 1));
}

int64_t ByteReader::any_int64() {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | byte();
  int64_t out;
  std::memcpy(&out, &v, sizeof out);
  return out;
}

std::string ByteReader::text(size_t max_len) {
  const size_t len = std::min<size_t>(byte(), std::min(max_len, n_));
  std::string s(reinterpret_cast<const char*>(p_), len);
  p_ += len;
  n_ -= len;
  return s;
}

std::string ByteReader::rest() {
  std::string s(reinterpret_cast<const char*>(p_), n_);
  p_ += n_;
  n_ = 0;
  return s;
}

}  // namespace lf::fuzz
