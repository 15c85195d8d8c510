// Durable file operations: atomic replace (temp + fsync + rename + fsync of the directory),
// whole-file reads, free-space checks. Used for manifests, state files and weights.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace lf {

// Writes `content` to `path` atomically: a reader sees the old file or the whole new one.
// Blocks until the data and the rename are on disk. Throws std::runtime_error naming the file.
// `crash_point_name` (crash_point.h) fires with half of the temporary file written, so a test
// can kill the process in the middle of the write.
void atomic_write_file(const std::string& path, const std::string& content, const char* crash_point_name = nullptr);
// The same for content in pieces (written in order, never copied into one buffer): a file of
// tensors streams from the tensors' own memory.
void atomic_write_pieces(const std::string& path, const std::vector<std::pair<const void*, size_t>>& pieces,
                         const char* crash_point_name = nullptr);

// fsync of a file or a directory (so a rename inside it is durable).
void fsync_path(const std::string& path);

// Reads a whole file; throws std::runtime_error naming it when missing or unreadable.
std::string read_file(const std::string& path);
// The same, refusing (std::runtime_error naming it) a file of more than `max_bytes` before
// reading more than that: files from outside (manifests, state.json, configs) are bounded.
std::string read_file(const std::string& path, size_t max_bytes);

// Bytes available to an unprivileged user on the filesystem holding `path`.
uint64_t free_disk_bytes(const std::string& path);

// A name unique to this process for a temporary sibling of `path` ("path.tmp-<pid>-<n>").
std::string temp_sibling(const std::string& path);

}  // namespace lf
