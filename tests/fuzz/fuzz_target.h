// The fuzz targets: one per reader of untrusted bytes (docs/fuzzing.md). Each target feeds one
// input through the same entry points the program uses. The libFuzzer executables
// (LF_FUZZ=ON, clang) and the corpus replay test (every build) share these definitions, so a
// crash found by the fuzzer stays fixed once its input is in tests/fuzz_corpus/<target>/.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lf::fuzz {

struct Target {
  const char* name;  // also the corpus folder tests/fuzz_corpus/<name>
  // The file the input is written to (or named by, for in-memory parsers) inside the scratch
  // directory: every error message must name it.
  const char* file_name;
  // Feeds `data` through the reader. `path` is scratch_dir/file_name; `dir` its directory,
  // private to this process and emptied before each input. Throws what the reader throws.
  void (*run)(const uint8_t* data, size_t size, const std::string& path, const std::string& dir);
};

const std::vector<Target>& targets();
const Target& target(const std::string& name);

// Runs one input and judges the outcome: "" when it was read, or refused with
// std::invalid_argument / std::runtime_error (the documented errors) whose message names the
// input's path; otherwise a description of what went wrong (another exception type, or a
// message that does not name the input). A crash or a sanitizer report ends the process.
// When `refusal` is given, it receives the message of a documented refusal ("" when read).
std::string run_checked(const Target& t, const uint8_t* data, size_t size,
                        std::string* refusal = nullptr);

// The scratch directory of this process (created on first use).
const std::string& scratch_dir();

// Writes bytes to a file (throws std::runtime_error naming it on failure).
void write_file(const std::string& path, const void* data, size_t size);

// Consumes an input piece by piece to build structured files from it (the shard target makes a
// valid HDF5 file this way, so libhdf5 never parses fuzzed bytes). Past the end, every read
// returns zeros.
class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size) : p_(data), n_(size) {}
  uint8_t byte() { return n_ ? (--n_, *p_++) : 0; }
  bool flag() { return byte() & 1; }
  // An integer in [lo, hi] (hi - lo < 2^32).
  int64_t in_range(int64_t lo, int64_t hi);
  // 8 raw bytes as int64 (any value, extremes included).
  int64_t any_int64();
  // Up to max_len bytes: a length byte, then the bytes.
  std::string text(size_t max_len);
  // Whatever is left.
  std::string rest();
  size_t left() const { return n_; }

 private:
  const uint8_t* p_;
  size_t n_;
};

}  // namespace lf::fuzz
