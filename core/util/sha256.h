// SHA-256 (OpenSSL's EVP) of bytes, files and tensors' raw data; hex digests everywhere.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace lf {

// Incremental SHA-256. update() may be called any number of times; hex() finishes it.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t n);
  void update(const std::string& s) { update(s.data(), s.size()); }
  std::string hex();  // 64 lowercase hex characters; the object cannot be updated after.

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string sha256_hex(const void* data, size_t n);
inline std::string sha256_hex(const std::string& s) { return sha256_hex(s.data(), s.size()); }
// Streams the file; throws std::runtime_error naming the file if it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace lf
