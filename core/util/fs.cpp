// Durable file operations (see fs.h).
#include "core/util/fs.h"

#include "core/util/crash_point.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "core/util/strings.h"

namespace lf {

namespace fs = std::filesystem;

std::string temp_sibling(const std::string& path) {
  static std::atomic<int> counter{0};
  return str(path, ".tmp-", ::getpid(), "-", counter++);
}

void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw std::runtime_error(str(path, ": cannot open for fsync: ", std::strerror(errno)));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  // Some filesystems refuse fsync on directories (EINVAL); the rename is then as durable as
  // that filesystem allows.
  if (rc != 0 && err != EINVAL)
    throw std::runtime_error(str(path, ": fsync failed: ", std::strerror(err)));
}

void atomic_write_file(const std::string& path, const std::string& content, const char* crash_point_name) {
  atomic_write_pieces(path, {{content.data(), content.size()}}, crash_point_name);
}

void atomic_write_pieces(const std::string& path, const std::vector<std::pair<const void*, size_t>>& pieces,
                         const char* crash_point_name) {
  const std::string tmp = temp_sibling(path);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw std::runtime_error(str(tmp, ": cannot create: ", std::strerror(errno)));
  size_t total = 0;
  for (const auto& [data, bytes] : pieces) total += bytes;
  size_t done = 0;  // over all pieces
  bool crash_checked = crash_point_name == nullptr;
  for (const auto& [data, bytes] : pieces) {
    size_t off = 0;
    while (off < bytes) {
      if (!crash_checked && done >= total / 2) {
        crash_point(crash_point_name);
        crash_checked = true;
      }
      // At most up to half of the file at a time while the crash point is pending, so it fires mid-file.
      const size_t chunk = crash_checked ? bytes - off : std::min(bytes - off, total / 2 - done);
      ssize_t n = ::write(fd, static_cast<const char*>(data) + off, std::max<size_t>(chunk, 1));
      if (n < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        ::close(fd);
        ::unlink(tmp.c_str());
        throw std::runtime_error(str(tmp, ": write failed: ", std::strerror(err)));
      }
      off += static_cast<size_t>(n);
      done += static_cast<size_t>(n);
    }
  }
  if (!crash_checked) crash_point(crash_point_name);
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error(str(tmp, ": fsync/close failed: ", std::strerror(err)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error(str("cannot rename ", tmp, " to ", path, ": ", std::strerror(err)));
  }
  fs::path parent = fs::path(path).parent_path();
  fsync_path(parent.empty() ? "." : parent.string());
}

std::string read_file(const std::string& path) { return read_file(path, SIZE_MAX - 1); }

std::string read_file(const std::string& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(str(path, ": cannot open: ", std::strerror(errno)));
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw std::runtime_error(str(path, ": is a directory, expected a file"));
  // Read at most max_bytes + 1 bytes: a special file (/dev/zero) has no size to check first.
  std::string out;
  char buf[1 << 16];
  while (in) {
    in.read(buf, sizeof buf);
    out.append(buf, static_cast<size_t>(in.gcount()));
    if (out.size() > max_bytes)
      throw std::runtime_error(str(path, ": larger than the limit of ", max_bytes, " bytes"));
  }
  if (in.bad()) throw std::runtime_error(str(path, ": read error"));
  return out;
}

uint64_t free_disk_bytes(const std::string& path) {
  struct statvfs st {};
  fs::path p = path;
  while (!p.empty() && !fs::exists(p)) p = p.parent_path();
  if (p.empty()) p = ".";
  if (::statvfs(p.c_str(), &st) != 0)
    throw std::runtime_error(str(p.string(), ": statvfs failed: ", std::strerror(errno)));
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

}  // namespace lf
